//! The typed model of Harness v0 YAML: pipelines, stages, steps, step groups, strategies, failure strategies,
//! variables, and the entities kept beside them (services, environments, infrastructure definitions, input
//! sets). Every node keeps its source [`Span`]; the model serialises back to Harness's YAML shape and derives
//! the JSON Schema that `pipewright schema` prints.

use crate::diag::Span;
use crate::duration::Duration;
use schemars::JsonSchema;
use serde::Serialize;
use std::borrow::Cow;

/// A value with the span it was read from; serialises as the bare value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wrap a value.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<T>()
    }
}

/// A string field (may hold `<+…>` expressions or be a `<+input>`).
pub type Str = Spanned<String>;

/// Free-form YAML kept as it was written (`properties`, `platform`, `serviceInputs`, …).
pub type Any = serde_json::Value;

/// `key: value` tags.
pub type Tags = serde_json::Map<String, serde_json::Value>;

/// `pipeline:` — the root of a pipeline file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Display name.
    pub name: Str,
    /// Identifier, unique in the project.
    pub identifier: Str,
    /// Project the pipeline belongs to.
    pub project_identifier: Option<Str>,
    /// Organization the project belongs to.
    pub org_identifier: Option<Str>,
    /// Description.
    pub description: Option<Str>,
    /// Tags.
    pub tags: Option<Tags>,
    /// "Allow selective stage(s) executions".
    pub allow_stage_executions: bool,
    /// Pipeline variables (`<+pipeline.variables.x>`).
    pub variables: Vec<Variable>,
    /// Kept as written.
    pub properties: Option<Any>,
    /// Whole-pipeline timeout.
    pub timeout: Option<Duration>,
    /// Stages in order; `parallel` blocks run side by side.
    pub stages: Vec<StageElement>,
    /// Kept as written.
    pub notification_rules: Option<Any>,
    /// Kept as written.
    pub delegate_selectors: Option<Vec<Str>>,
    /// Where the `pipeline:` map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// An entry of `stages:`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StageElement {
    /// `- stage: …`
    Stage(Box<Stage>),
    /// `- parallel: [ - stage: … ]`
    Parallel(Vec<StageElement>),
}

/// The supported stage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum StageType {
    /// Runs steps.
    Custom,
    /// A build stage; runs steps locally.
    #[serde(rename = "CI")]
    Ci,
    /// Deploys a service to an environment's infrastructure.
    Deployment,
    /// Waits for an approval.
    Approval,
    /// Runs another pipeline as a child execution (a chained pipeline).
    Pipeline,
    /// A security-testing stage (STO): a build stage's shape; its steps run locally.
    SecurityTests,
    /// An infrastructure-as-code stage: its steps run as in a Custom stage; `workspace` and the rest are kept.
    #[serde(rename = "IACM")]
    Iacm,
    /// An internal-developer-portal stage: its steps run as in a Custom stage.
    #[serde(rename = "IDP")]
    Idp,
    /// A feature-flag stage: its steps run as in a Custom stage.
    FeatureFlag,
}

impl StageType {
    /// Every supported name.
    pub const NAMES: &'static [&'static str] =
        &["Custom", "CI", "Deployment", "Approval", "Pipeline", "SecurityTests", "IACM", "IDP", "FeatureFlag"];

    /// A build stage's shape (`cloneCodebase`, `platform`, `runtime`, …).
    pub fn is_build(self) -> bool {
        matches!(self, StageType::Ci | StageType::SecurityTests)
    }

    /// A stage type whose own settings pipewright keeps but does not use (its steps run as in a Custom stage).
    pub fn kept_only(self) -> bool {
        matches!(self, StageType::Iacm | StageType::Idp | StageType::FeatureFlag)
    }
}

/// `stage:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Display name.
    pub name: Str,
    /// Identifier, unique in the pipeline.
    pub identifier: Str,
    /// Description.
    pub description: Option<Str>,
    /// Stage type.
    #[serde(rename = "type")]
    pub stage_type: StageType,
    /// The stage's spec.
    pub spec: StageSpec,
    /// Stage variables (`<+stage.variables.x>`).
    pub variables: Vec<Variable>,
    /// Conditional execution.
    pub when: Option<When>,
    /// Failure strategies.
    pub failure_strategies: Vec<FailureStrategy>,
    /// Looping strategy.
    pub strategy: Option<Strategy>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Tags.
    pub tags: Option<Tags>,
    /// Kept as written.
    pub delegate_selectors: Option<Vec<Str>>,
    /// Where the `stage:` map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// A stage's `spec:`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// CI: whether to clone the codebase (kept).
    pub clone_codebase: Option<bool>,
    /// CI: kept as written.
    pub platform: Option<Any>,
    /// CI: kept as written.
    pub runtime: Option<Any>,
    /// CI: kept as written. Deployment: the older `infrastructure:` form, with `environmentRef` and
    /// `useFromStage` read.
    pub infrastructure: Option<KeptBlock>,
    /// CI: kept as written.
    pub caching: Option<Any>,
    /// Deployment: `Kubernetes`, `NativeHelm`, `Ssh`, …
    pub deployment_type: Option<Str>,
    /// Deployment: the service.
    pub service: Option<ServiceConfig>,
    /// Deployment: the environment and infrastructure.
    pub environment: Option<EnvironmentConfig>,
    /// Deployment: the older `serviceConfig:` form.
    pub service_config: Option<KeptBlock>,
    /// Pipeline: the chained pipeline, its inputs and the outputs it gives this pipeline.
    pub chained: Option<ChainedPipeline>,
    /// Deployment: several services (`services: {values: […], metadata: {parallel}}`).
    pub services: Option<MultiServices>,
    /// Deployment: several environments (`environments: {values: […]}`, or an `environmentGroup`).
    pub environments: Option<MultiEnvironments>,
    /// Approval stages and all others: the steps.
    pub execution: Execution,
}

/// `execution:`
#[derive(Debug, Clone, Serialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// Steps in order.
    pub steps: Vec<ExecutionElement>,
    /// Steps run by `StageRollback` / `PipelineRollback`.
    pub rollback_steps: Vec<ExecutionElement>,
    /// Where the `execution:` map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// `useFromStage: {stage: ID}` — propagate a setting from an earlier stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UseFromStage {
    /// The stage to take the setting from.
    pub stage: Str,
}

/// `service:` of a Deployment stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// The service entity's identifier.
    pub service_ref: Option<Str>,
    /// Runtime inputs for the service, kept as written.
    pub service_inputs: Option<Any>,
    /// Propagate the service from an earlier stage.
    pub use_from_stage: Option<UseFromStage>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// The `spec` of a `Pipeline` stage: which pipeline it runs, with what inputs, and what it gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainedPipeline {
    /// Its organization (default: this pipeline's).
    pub org: Option<Str>,
    /// Its project (default: this pipeline's).
    pub project: Option<Str>,
    /// Its identifier.
    pub pipeline: Str,
    /// Its runtime inputs, in its own shape (`variables`, `stages`); expressions read this pipeline.
    pub inputs: Option<Any>,
    /// Values read from the child execution when it ends (`<+pipeline.stages.THIS.output.NAME>`); their
    /// expressions read the child pipeline.
    pub outputs: Vec<NameValue>,
}

/// `services:` of a Deployment stage: the stage deploys each of them.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiServices {
    /// The services.
    pub values: Vec<ServiceConfig>,
    /// `metadata.parallel`: deploy them side by side.
    pub parallel: bool,
    /// The services of an earlier stage, deployed again here (`services: {useFromStage: {stage}}`).
    pub use_from_stage: Option<UseFromStage>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// `environments:` (or `environmentGroup:`) of a Deployment stage: the stage deploys to each environment's
/// infrastructure definitions.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiEnvironments {
    /// The environments.
    pub values: Vec<EnvironmentConfig>,
    /// `metadata.parallel`: deploy to them side by side.
    pub parallel: bool,
    /// `environmentGroup.envGroupRef`, when the environments come from a group.
    pub group: Option<Str>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// `environment:` of a Deployment stage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentConfig {
    /// The environment entity's identifier.
    pub environment_ref: Option<Str>,
    /// Kept as written.
    pub deploy_to_all: Option<bool>,
    /// Runtime inputs for the environment, kept as written.
    pub environment_inputs: Option<Any>,
    /// Infrastructure definitions to deploy to.
    pub infrastructure_definitions: Vec<InfraRef>,
    /// Propagate environment and infrastructure from an earlier stage.
    pub use_from_stage: Option<UseFromStage>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// An entry of `infrastructureDefinitions:`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InfraRef {
    /// The infrastructure definition's identifier.
    pub identifier: Str,
    /// Runtime inputs, kept as written.
    pub inputs: Option<Any>,
}

/// A block kept as written, with its reference and `useFromStage` read where they mean something (the older
/// Deployment `serviceConfig:` / `infrastructure:` forms). Serialises as the block as written.
#[derive(Debug, Clone, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptBlock {
    /// `serviceRef` or `environmentRef`.
    pub reference: Option<Str>,
    /// Propagate from an earlier stage.
    pub use_from_stage: Option<UseFromStage>,
    /// The whole block as written.
    pub raw: Any,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

impl Serialize for KeptBlock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

/// An entry of `steps:` / `rollbackSteps:`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExecutionElement {
    /// `- step: …`
    Step(Box<Step>),
    /// `- stepGroup: …`
    StepGroup(Box<StepGroup>),
    /// `- parallel: [ … ]`
    Parallel(Vec<ExecutionElement>),
}

/// `stepGroup:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepGroup {
    /// Display name.
    pub name: Str,
    /// Identifier, unique in the stage.
    pub identifier: Str,
    /// The group's steps.
    pub steps: Vec<ExecutionElement>,
    /// Conditional execution.
    pub when: Option<When>,
    /// Failure strategies.
    pub failure_strategies: Vec<FailureStrategy>,
    /// Looping strategy.
    pub strategy: Option<Strategy>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// A step's type: one pipewright runs, or another Harness type, kept as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepType {
    /// A bash or sh script on this machine.
    ShellScript,
    /// A command (a container step in Harness CI; run on this machine by pipewright).
    Run,
    /// An HTTP request with an assertion.
    Http,
    /// Waits for a duration.
    Wait,
    /// Waits for a person's approval.
    HarnessApproval,
    /// Clones a repository (built in: `git`; a step handler may take it over). Its spec is kept as data.
    GitClone,
    /// A service that runs until its stage ends (built in: a local process; a step handler may take it
    /// over). Its spec is kept as data.
    Background,
    /// Another Harness step type (`K8sRollingDeploy`, `JiraApproval`, …): it loads and plans, its spec is kept
    /// as data, and a run fails at it, saying so.
    Harness(&'static str),
}

impl StepType {
    /// The types pipewright runs itself.
    pub const NAMES: &'static [&'static str] = &["ShellScript", "Run", "Http", "Wait", "HarnessApproval"];

    /// Every type with a variant of its own: those above, then Harness's types with a built-in handler
    /// (`crate::BUILTIN_HANDLED` is the rest of this list).
    pub const OWN: &'static [&'static str] =
        &["ShellScript", "Run", "Http", "Wait", "HarnessApproval", "GitClone", "Background"];

    /// A type whose spec is kept as data (Harness's own, read by a built-in or a step handler).
    pub fn spec_as_data(self) -> bool {
        matches!(self, StepType::GitClone | StepType::Background | StepType::Harness(_))
    }

    /// The type as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            StepType::ShellScript => "ShellScript",
            StepType::Run => "Run",
            StepType::Http => "Http",
            StepType::Wait => "Wait",
            StepType::HarnessApproval => "HarnessApproval",
            StepType::GitClone => "GitClone",
            StepType::Background => "Background",
            StepType::Harness(n) => n,
        }
    }
}

impl Serialize for StepType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl JsonSchema for StepType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepType".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = StepType::OWN.iter().chain(HARNESS_STEP_TYPES).copied().collect();
        schemars::json_schema!({"type": "string", "enum": names})
    }
}

/// Harness's other step types (CI, CD, approvals, notifications, infrastructure as code, security scans):
/// they load and plan, and a run fails at them, saying that pipewright does not run them.
pub const HARNESS_STEP_TYPES: &[&str] = &[
    // CI
    "RunTests",
    "Plugin",
    "Action",
    "Bitrise",
    "Container",
    "BuildAndPushDockerRegistry",
    "BuildAndPushECR",
    "BuildAndPushGCR",
    "BuildAndPushGAR",
    "BuildAndPushACR",
    "SaveCacheS3",
    "RestoreCacheS3",
    "SaveCacheGCS",
    "RestoreCacheGCS",
    "SaveCacheHarness",
    "RestoreCacheHarness",
    "S3Upload",
    "GCSUpload",
    "ArtifactoryUpload",
    // Security and supply chain
    "Security",
    "AquaTrivy",
    "Snyk",
    "SonarQube",
    "Gitleaks",
    "Owasp",
    "Grype",
    "Semgrep",
    "Checkmarx",
    "BlackDuck",
    "Wiz",
    "Sysdig",
    "Anchore",
    "AWSECR",
    "AWSSecurityHub",
    "Bandit",
    "Brakeman",
    "Burp",
    "Checkov",
    "CodeQL",
    "Coverity",
    "Fossa",
    "Mend",
    "Nexus",
    "Nikto",
    "Nmap",
    "OsvScanner",
    "PrismaCloud",
    "Qwiet",
    "Traceable",
    "Twistlock",
    "Veracode",
    "Zap",
    "Trufflehog",
    "Prowler",
    "CustomIngest",
    "SscaOrchestration",
    "SscaEnforcement",
    "SlsaVerification",
    // Kubernetes and Helm
    "K8sRollingDeploy",
    "K8sRollingRollback",
    "K8sApply",
    "K8sDelete",
    "K8sScale",
    "K8sCanaryDeploy",
    "K8sCanaryDelete",
    "K8sBlueGreenDeploy",
    "K8sBGSwapServices",
    "K8sBlueGreenStageScaleDown",
    "K8sDryRun",
    "K8sTrafficRouting",
    "K8sPatch",
    "HelmDeploy",
    "HelmRollback",
    "HelmBGDeploy",
    "HelmBlueGreenSwapStep",
    "HelmCanaryDeploy",
    "HelmCanaryDelete",
    "DownloadManifests",
    "DownloadAwsS3",
    "DownloadHarnessStore",
    // Infrastructure as code
    "TerraformPlan",
    "TerraformApply",
    "TerraformDestroy",
    "TerraformRollback",
    "TerraformCloudRun",
    "TerraformCloudRollback",
    "TerragruntPlan",
    "TerragruntApply",
    "TerragruntDestroy",
    "TerragruntRollback",
    "CreateStack",
    "DeleteStack",
    "RollbackStack",
    "AzureCreateARMResource",
    "AzureCreateBPResource",
    "AzureARMRollback",
    "ShellScriptProvision",
    "IACMTerraformPlugin",
    "IACMOpenTofuPlugin",
    // Cloud deployments
    "EcsRollingDeploy",
    "EcsRollingRollback",
    "EcsCanaryDeploy",
    "EcsCanaryDelete",
    "EcsBlueGreenCreateService",
    "EcsBlueGreenSwapTargetGroups",
    "EcsBlueGreenRollback",
    "EcsRunTask",
    "AsgRollingDeploy",
    "AsgRollingRollback",
    "AsgCanaryDeploy",
    "AsgCanaryDelete",
    "AsgBlueGreenDeploy",
    "AsgBlueGreenRollback",
    "AsgBlueGreenSwapService",
    "AwsLambdaDeploy",
    "AwsLambdaRollback",
    "AwsSamDeploy",
    "AwsSamBuild",
    "AwsSamRollback",
    "ServerlessAwsLambdaDeploy",
    "ServerlessAwsLambdaRollback",
    "ServerlessAwsLambdaDeployV2",
    "ServerlessAwsLambdaPackageV2",
    "ServerlessAwsLambdaRollbackV2",
    "ServerlessAwsLambdaPrepareRollbackV2",
    "AzureWebAppSlotDeployment",
    "AzureWebAppTrafficShift",
    "AzureWebAppSwapSlot",
    "AzureWebAppRollback",
    "GoogleCloudFunctionsDeploy",
    "GoogleCloudFunctionsDeployWithoutTraffic",
    "GoogleCloudFunctionsTrafficShift",
    "GoogleCloudFunctionsRollback",
    "DeployCloudFunction",
    "TasCanaryAppSetup",
    "TasBGAppSetup",
    "TasBasicAppSetup",
    "TasAppResize",
    "TasSwapRoutes",
    "TasRollback",
    "TasSwapRollback",
    "TanzuCommand",
    "TasRouteMapping",
    "ElastigroupDeploy",
    "ElastigroupRollback",
    "ElastigroupSetup",
    "ElastigroupBGStageSetup",
    "ElastigroupSwapRoute",
    "Command",
    "FetchInstanceScript",
    // GitOps
    "GitOpsUpdateReleaseRepo",
    "GitOpsFetchLinkedApps",
    "GitOpsSync",
    "UpdateReleaseRepo",
    "MergePR",
    "CreatePR",
    "RevertPR",
    // Approvals, tickets, notifications, flow control
    "JiraCreate",
    "JiraUpdate",
    "JiraApproval",
    "ServiceNowCreate",
    "ServiceNowUpdate",
    "ServiceNowApproval",
    "ServiceNowImportSet",
    "CustomApproval",
    "Email",
    "Notify",
    "Queue",
    "Barrier",
    "ResourceConstraint",
    "Policy",
    "FlagConfiguration",
    "Verify",
    "AnalyzeDeploymentImpact",
    "JenkinsBuild",
    "JenkinsBuildV2",
    "BambooBuild",
    "Chaos",
    "HarnessCodeCheck",
];

/// `step:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Display name.
    pub name: Str,
    /// Identifier, unique in the stage.
    pub identifier: Str,
    /// Step type.
    #[serde(rename = "type")]
    pub step_type: StepType,
    /// Description.
    pub description: Option<Str>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// The type's settings.
    pub spec: StepSpec,
    /// Conditional execution.
    pub when: Option<When>,
    /// Failure strategies.
    pub failure_strategies: Vec<FailureStrategy>,
    /// Looping strategy.
    pub strategy: Option<Strategy>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// A step's `spec:`, by type.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StepSpec {
    /// `ShellScript`
    ShellScript(ShellScriptSpec),
    /// `Run`
    Run(RunSpec),
    /// `Http`
    Http(HttpSpec),
    /// `Wait`
    Wait(WaitSpec),
    /// `HarnessApproval`
    HarnessApproval(ApprovalSpec),
    /// Another Harness step type's spec, as written.
    Harness(Any),
}

/// How a step type pipewright does not run itself is run: a script of the user's (a `stepHandlers` entry of
/// `.harness/pipewright.yaml`), given the step as JSON in `PIPEWRIGHT_STEP_JSON`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepHandler {
    /// `Bash` (default) or `Sh`.
    pub shell: Shell,
    /// The script.
    pub script: Str,
    /// Shell variables captured as the step's output variables when the script ends.
    pub output_variables: Vec<OutputVariable>,
}

/// Shells a script may run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Shell {
    /// `bash`
    Bash,
    /// `sh`
    Sh,
}

/// A name/value pair (`environmentVariables`, `headers`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NameValue {
    /// Name.
    pub name: Str,
    /// Value (may hold expressions).
    pub value: Str,
    /// `String` or `Secret`.
    #[serde(rename = "type")]
    pub value_type: Option<Str>,
}

/// An output variable: `{name, type, value}` (ShellScript: `value` names the shell variable; Http: an
/// expression), or `{name}` (Run: the environment variable of that name).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputVariable {
    /// The output's name.
    pub name: Str,
    /// `String`, `Secret`.
    #[serde(rename = "type")]
    pub value_type: Option<Str>,
    /// The shell variable (ShellScript) or expression (Http) that gives the value.
    pub value: Option<Str>,
}

/// `ShellScript` spec.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShellScriptSpec {
    /// `Bash` or `Sh`.
    pub shell: Shell,
    /// `source: {type: Inline, spec: {script: …}}`, flattened to the script.
    #[serde(rename = "source", serialize_with = "ser_inline_source")]
    #[schemars(with = "InlineSource")]
    pub script: Str,
    /// Exported before the script runs.
    pub environment_variables: Vec<NameValue>,
    /// Captured after the script ends.
    pub output_variables: Vec<OutputVariable>,
    /// Kept as written (pipewright runs on this machine).
    pub execution_target: Option<Any>,
    /// Kept as written.
    pub delegate_selectors: Option<Vec<Str>>,
}

/// `source:` of a ShellScript step.
#[derive(Serialize, JsonSchema)]
struct InlineSource {
    /// Always `Inline`.
    #[serde(rename = "type")]
    source_type: String,
    /// `{script: …}`
    spec: InlineScript,
}

#[derive(Serialize, JsonSchema)]
struct InlineScript {
    script: String,
}

fn ser_inline_source<S: serde::Serializer>(script: &Str, s: S) -> Result<S::Ok, S::Error> {
    InlineSource { source_type: "Inline".into(), spec: InlineScript { script: script.value.clone() } }.serialize(s)
}

/// `Run` spec.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// `Sh`, `Bash` (others are refused).
    pub shell: Option<Shell>,
    /// The command.
    pub command: Str,
    /// Environment variables (`KEY: value`).
    pub env_variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Environment variables captured after the command ends.
    pub output_variables: Vec<OutputVariable>,
    /// Ignored locally (reported by `validate`).
    pub image: Option<Str>,
    /// Ignored locally (reported by `validate`).
    pub connector_ref: Option<Str>,
}

/// `Http` spec.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    /// URL.
    pub url: Str,
    /// `GET`, `POST`, `PUT`, `DELETE`, `HEAD`, `OPTIONS`, `PATCH`.
    pub method: Str,
    /// Request headers (`{key, value}`).
    pub headers: Vec<HttpHeader>,
    /// Request body.
    pub request_body: Option<Str>,
    /// A condition over `<+httpResponseCode>` / `<+httpResponseBody>`.
    pub assertion: Option<Str>,
    /// Outputs: `{name, type, value: <expression>}`.
    pub output_variables: Vec<OutputVariable>,
}

/// An HTTP header.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HttpHeader {
    /// Header name.
    pub key: Str,
    /// Header value.
    pub value: Str,
}

/// `Wait` spec.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WaitSpec {
    /// How long to wait.
    pub duration: Duration,
}

/// `HarnessApproval` spec.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Shown to approvers.
    pub approval_message: Option<Str>,
    /// Kept.
    pub include_pipeline_execution_history: Option<bool>,
    /// Who may approve.
    pub approvers: Approvers,
    /// Inputs the approver fills in (`{name, defaultValue}`).
    pub approver_inputs: Vec<ApproverInput>,
    /// Kept.
    pub is_auto_reject_enabled: Option<bool>,
}

/// `approvers:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvers {
    /// User groups whose members may approve.
    pub user_groups: Vec<Str>,
    /// How many approvals are needed.
    pub minimum_count: u32,
    /// Whether the person who ran the pipeline is barred from approving.
    pub disallow_pipeline_executor: bool,
}

/// An approver input.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproverInput {
    /// Name.
    pub name: Str,
    /// Default.
    pub default_value: Option<Str>,
}

/// Variable types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum VariableType {
    /// Text.
    String,
    /// A number.
    Number,
    /// A secret reference (masked in logs).
    Secret,
}

/// A pipeline, stage, service or environment variable.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Variable {
    /// Name.
    pub name: Str,
    /// Type.
    #[serde(rename = "type")]
    pub var_type: VariableType,
    /// Description.
    pub description: Option<Str>,
    /// Whether a value must be given.
    pub required: Option<bool>,
    /// The value (text as written; may be an expression or `<+input>`).
    pub value: Option<Str>,
    /// Default.
    pub default: Option<Str>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// `when:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct When {
    /// Stages: `pipelineStatus`.
    pub pipeline_status: Option<StatusCondition>,
    /// Steps and step groups: `stageStatus`.
    pub stage_status: Option<StatusCondition>,
    /// An expression that must be true.
    pub condition: Option<Str>,
}

/// `Success`, `Failure`, `All`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum StatusCondition {
    /// Run only if all went well so far.
    Success,
    /// Run only if something failed.
    Failure,
    /// Run regardless.
    All,
}

/// An entry of `failureStrategies:`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureStrategy {
    /// `onFailure:`
    pub on_failure: OnFailure,
}

/// `onFailure: {errors, action}`
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OnFailure {
    /// Which errors this strategy handles.
    pub errors: Vec<ErrorType>,
    /// What to do.
    pub action: Action,
}

/// Failure types a strategy may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ErrorType {
    /// Any failure.
    AllErrors,
    /// An unclassified failure (a non-zero exit, a failed assertion).
    Unknown,
    /// A timeout.
    Timeout,
    /// Credentials refused.
    Authentication,
    /// Not allowed.
    Authorization,
    /// A connection failed.
    Connectivity,
    /// No executor could be had.
    DelegateProvisioning,
    /// A verification failed.
    Verification,
    /// A policy refused.
    PolicyEvaluationFailure,
    /// An execution input was not given in time.
    InputTimeoutError,
    /// An approval was rejected.
    ApprovalRejection,
    /// The executor restarted.
    DelegateRestart,
    /// A user marked the node failed.
    UserMarkedFailure,
}

impl ErrorType {
    /// Every supported name.
    pub const NAMES: &'static [&'static str] = &[
        "AllErrors",
        "Unknown",
        "Timeout",
        "Authentication",
        "Authorization",
        "Connectivity",
        "DelegateProvisioning",
        "Verification",
        "PolicyEvaluationFailure",
        "InputTimeoutError",
        "ApprovalRejection",
        "DelegateRestart",
        "UserMarkedFailure",
    ];
}

/// A failure-strategy action.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", content = "spec")]
pub enum Action {
    /// Try again.
    Retry(RetrySpec),
    /// Mark `IgnoreFailed` and go on.
    Ignore,
    /// Abort the pipeline.
    Abort,
    /// Mark success and go on.
    MarkAsSuccess,
    /// Mark failed.
    MarkAsFailure,
    /// Wait for a person's decision.
    ManualIntervention(ManualInterventionSpec),
    /// Run the stage's rollback steps.
    StageRollback,
    /// Run the rollback steps of every stage that ran, in reverse.
    PipelineRollback,
}

impl Action {
    /// Every supported name.
    pub const NAMES: &'static [&'static str] = &[
        "Retry",
        "Ignore",
        "Abort",
        "MarkAsSuccess",
        "MarkAsFailure",
        "ManualIntervention",
        "StageRollback",
        "PipelineRollback",
    ];
}

/// `Retry` settings.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// How many more attempts.
    pub retry_count: u32,
    /// Waits between attempts (the last repeats).
    pub retry_intervals: Vec<Duration>,
    /// What to do when the last attempt fails.
    pub on_retry_failure: Box<ActionHolder>,
}

/// `{action: …}`
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ActionHolder {
    /// The action.
    pub action: Action,
}

/// `ManualIntervention` settings.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualInterventionSpec {
    /// How long to wait for a decision.
    pub timeout: Option<Duration>,
    /// What to do when nobody decides in time.
    pub on_timeout: Box<ActionHolder>,
}

/// `strategy:` — a looping strategy.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// `matrix:` — one iteration per combination of axis values.
    Matrix(Matrix),
    /// `repeat:` — `times` iterations or one per item.
    Repeat(Repeat),
    /// `parallelism: N` — N identical iterations.
    Parallelism(Spanned<u32>),
}

/// `matrix:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Matrix {
    /// Axis name → values (kept as written; values may be expressions).
    #[serde(flatten)]
    pub axes: serde_json::Map<String, serde_json::Value>,
    /// Combinations to leave out.
    pub exclude: Vec<serde_json::Map<String, serde_json::Value>>,
    /// How many iterations run at once.
    pub max_concurrency: Option<u32>,
    /// How iterations are named (an expression, e.g. `<+matrix.os>`).
    pub node_name: Option<Str>,
    /// Where the map is.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
}

/// `repeat:`
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repeat {
    /// Run this many times.
    pub times: Option<u32>,
    /// Run once per item (`<+repeat.item>`).
    pub items: Option<Vec<serde_json::Value>>,
    /// How many iterations run at once.
    pub max_concurrency: Option<u32>,
    /// How iterations are named (an expression, e.g. `<+repeat.item>`).
    pub node_name: Option<Str>,
}

/// The fields every entity file shares.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityMeta {
    /// Name.
    pub name: Str,
    /// Identifier.
    pub identifier: Str,
    /// Organization.
    pub org_identifier: Option<Str>,
    /// Project.
    pub project_identifier: Option<Str>,
    /// Description.
    pub description: Option<Str>,
    /// Tags.
    pub tags: Option<Tags>,
}

/// `service:` entity file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Name, identifier, scope, description, tags.
    #[serde(flatten)]
    pub meta: EntityMeta,
    /// `serviceDefinition.type`.
    pub deployment_type: Option<Str>,
    /// `serviceDefinition.spec.variables` (`<+serviceVariables.x>`).
    pub variables: Vec<Variable>,
    /// The whole `serviceDefinition` as written.
    pub service_definition: Option<Any>,
}

/// Environment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum EnvironmentType {
    /// Production.
    Production,
    /// Anything else.
    PreProduction,
}

/// `environment:` entity file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Name, identifier, scope, description, tags.
    #[serde(flatten)]
    pub meta: EntityMeta,
    /// `Production` or `PreProduction`.
    #[serde(rename = "type")]
    pub env_type: EnvironmentType,
    /// `<+env.variables.x>`.
    pub variables: Vec<Variable>,
}

/// `infrastructureDefinition:` entity file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureDefinition {
    /// Name, identifier, scope, description, tags.
    #[serde(flatten)]
    pub meta: EntityMeta,
    /// The environment it belongs to.
    pub environment_ref: Str,
    /// Deployment type.
    pub deployment_type: Option<Str>,
    /// Infrastructure type (`KubernetesDirect`, …).
    #[serde(rename = "type")]
    pub infra_type: Option<Str>,
    /// The spec as written (`<+infra.namespace>` reads `spec.namespace`).
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// `inputSet:` file: runtime-input values in the pipeline's shape.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSet {
    /// Name, identifier, scope, description, tags.
    #[serde(flatten)]
    pub meta: EntityMeta,
    /// The pipeline-shaped values (`pipeline.identifier` names the pipeline).
    pub pipeline: Any,
    /// The pipeline the set is for.
    pub pipeline_identifier: Option<Str>,
}

/// `overlayInputSet:` file: several input sets combined, later ones winning.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlayInputSet {
    /// Name, identifier, scope, description, tags.
    #[serde(flatten)]
    pub meta: EntityMeta,
    /// The pipeline the overlay is for.
    pub pipeline_identifier: Option<Str>,
    /// Input sets in overlay order.
    pub input_set_references: Vec<Str>,
}

/// The root of a pipeline YAML file, for the JSON Schema.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PipelineFile {
    /// The pipeline.
    pub pipeline: Pipeline,
}

fn collect_stages<'a>(els: &'a [StageElement], out: &mut Vec<&'a Stage>) {
    for e in els {
        match e {
            StageElement::Stage(s) => out.push(s),
            StageElement::Parallel(inner) => collect_stages(inner, out),
        }
    }
}

impl Pipeline {
    /// The `delegateSelectors` a step of `stage` runs under: the step's own (a ShellScript's), else its
    /// stage's, else the pipeline's; an empty list counts as none.
    pub fn delegate_selectors<'a>(&'a self, stage: &'a Stage, step: &'a Step) -> &'a [Str] {
        let own = match &step.spec {
            StepSpec::ShellScript(x) => x.delegate_selectors.as_deref(),
            _ => None,
        };
        [own, stage.delegate_selectors.as_deref(), self.delegate_selectors.as_deref()]
            .into_iter()
            .flatten()
            .find(|l| !l.is_empty())
            .unwrap_or(&[])
    }

    /// Every stage, flattening parallel blocks, in YAML order.
    pub fn all_stages(&self) -> Vec<&Stage> {
        let mut out = Vec::new();
        collect_stages(&self.stages, &mut out);
        out
    }

    /// Stages grouped by the order they run in: each entry is one stage, or the stages of one parallel block.
    pub fn stage_groups(&self) -> Vec<Vec<&Stage>> {
        self.stages
            .iter()
            .map(|e| {
                let mut v = Vec::new();
                collect_stages(std::slice::from_ref(e), &mut v);
                v
            })
            .collect()
    }

    /// The stage with this identifier.
    pub fn stage(&self, id: &str) -> Option<&Stage> {
        self.all_stages().into_iter().find(|s| s.identifier.value == id)
    }
}

impl Execution {
    /// Every step and step group, depth first, with the chain of step groups around each.
    pub fn walk<'a>(&'a self, mut f: impl FnMut(&'a ExecutionElement, &[&'a StepGroup], bool)) {
        fn go<'a>(
            els: &'a [ExecutionElement],
            groups: &mut Vec<&'a StepGroup>,
            rollback: bool,
            f: &mut dyn FnMut(&'a ExecutionElement, &[&'a StepGroup], bool),
        ) {
            for e in els {
                match e {
                    ExecutionElement::Step(_) => f(e, groups, rollback),
                    ExecutionElement::StepGroup(g) => {
                        f(e, groups, rollback);
                        groups.push(g);
                        go(&g.steps, groups, rollback, f);
                        groups.pop();
                    }
                    ExecutionElement::Parallel(inner) => go(inner, groups, rollback, f),
                }
            }
        }
        let mut groups = Vec::new();
        go(&self.steps, &mut groups, false, &mut f);
        go(&self.rollback_steps, &mut groups, true, &mut f);
    }
}
