//! YAML nodes → the typed model. Reads pipelines, stages (by type), steps (by type), step groups, parallel
//! blocks, variables, conditions, failure strategies, looping strategies and the entity files, recording every
//! structural problem (wrong type, missing field, unknown key, unsupported type) instead of stopping at the first.

use crate::model::*;
use crate::read::{MapView, Reader};
use crate::yaml::{Node, Yaml};

const PIPELINE_KEYS: &[&str] = &[
    "name",
    "identifier",
    "projectIdentifier",
    "orgIdentifier",
    "description",
    "tags",
    "allowStageExecutions",
    "variables",
    "properties",
    "timeout",
    "stages",
    "notificationRules",
    "delegateSelectors",
];
const STAGE_KEYS: &[&str] = &[
    "name",
    "identifier",
    "description",
    "type",
    "spec",
    "variables",
    "when",
    "failureStrategies",
    "strategy",
    "timeout",
    "tags",
    "delegateSelectors",
];
const STEP_KEYS: &[&str] =
    &["name", "identifier", "type", "description", "timeout", "spec", "when", "failureStrategies", "strategy"];
/// A step group's keys; `delegateSelectors`, `stepGroupInfra` (a containerised group's pod) and `sharedPaths`
/// say where steps run, which here is always a local process: accepted quietly, as Harness writes them. (Step
/// group `variables` are not read, so they still warn.)
const GROUP_KEYS: &[&str] = &[
    "name",
    "identifier",
    "description",
    "steps",
    "when",
    "failureStrategies",
    "strategy",
    "timeout",
    "delegateSelectors",
    "stepGroupInfra",
    "sharedPaths",
];

/// Read the value of the top-level `pipeline:` key.
pub fn pipeline(r: &mut Reader, node: &Node) -> Option<Pipeline> {
    let m = r.map(node, "the pipeline", PIPELINE_KEYS)?;
    let name = r.req_str(&m, "name");
    let identifier = r.req_str(&m, "identifier");
    if let Some(id) = &identifier {
        r.identifier(id, "the pipeline");
    }
    let stages_node = r.req(&m, "stages");
    let stages = match stages_node {
        Some(n) => match r.seq(n, "`stages` of the pipeline") {
            Some([]) => {
                r.error(n.span, "the pipeline has no stages; add at least one `- stage:`");
                Vec::new()
            }
            Some(items) if items.len() >= crate::PARALLEL_FROM => {
                // A big pipeline's stages are read side by side, each part with its own reader; the stages and
                // the problems keep their order.
                let parts = crate::in_parallel(items, |chunk| {
                    let mut own = Reader::default();
                    let stages: Vec<StageElement> =
                        chunk.iter().filter_map(|i| stage_element(&mut own, i, false)).collect();
                    (stages, own.diags)
                });
                let mut stages = Vec::with_capacity(items.len());
                for (part, diags) in parts {
                    stages.extend(part);
                    r.diags.extend(diags);
                }
                stages
            }
            Some(items) => items.iter().filter_map(|i| stage_element(r, i, false)).collect(),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let p = Pipeline {
        project_identifier: r.opt_str(&m, "projectIdentifier"),
        org_identifier: r.opt_str(&m, "orgIdentifier"),
        description: r.opt_str(&m, "description"),
        tags: tags(r, &m),
        allow_stage_executions: r.opt_bool(&m, "allowStageExecutions").unwrap_or(false),
        variables: variables(r, &m),
        properties: m.get("properties").map(Node::to_json),
        timeout: r.opt_duration(&m, "timeout"),
        notification_rules: m.get("notificationRules").map(Node::to_json),
        delegate_selectors: r.opt_str_list(&m, "delegateSelectors"),
        stages,
        span: node.span,
        name: name?,
        identifier: identifier?,
    };
    Some(p)
}

fn tags(r: &mut Reader, m: &MapView<'_>) -> Option<Tags> {
    let n = m.get("tags")?;
    match n.to_json() {
        serde_json::Value::Object(o) => Some(o),
        _ => {
            r.error(n.span, format!("`tags` of {} must be a map of `key: value`", m.what));
            None
        }
    }
}

fn single_key<'n>(r: &mut Reader, node: &'n Node, what: &str, allowed: &[&str]) -> Option<(&'n str, &'n Node)> {
    let Yaml::Map(entries) = &node.yaml else {
        r.error(node.span, format!("expected `- {}:` in {what}, found {}", allowed.join(":` or `- "), node.kind()));
        return None;
    };
    let [(k, v)] = entries.as_slice() else {
        r.error_help(
            node.span,
            format!("each entry of {what} must hold exactly one of `{}`", allowed.join("`, `")),
            "check the indentation: the entry's fields belong one level deeper",
        );
        return None;
    };
    let key = k.as_scalar().unwrap_or_default();
    if !allowed.contains(&key) {
        let hint = crate::read::did_you_mean(key, allowed.iter().copied());
        r.error(k.span, format!("unexpected `{key}` in {what}{hint}; expected `{}`", allowed.join("`, `")));
        return None;
    }
    Some((key, v))
}

fn stage_element(r: &mut Reader, node: &Node, in_parallel: bool) -> Option<StageElement> {
    let (key, v) = single_key(r, node, "`stages`", &["stage", "parallel"])?;
    match key {
        "stage" => stage(r, v).map(|s| StageElement::Stage(Box::new(s))),
        _ => {
            if in_parallel {
                r.error(node.span, "a `parallel` block cannot contain another `parallel` block");
                return None;
            }
            let items = r.seq(v, "a `parallel` block")?;
            if items.is_empty() {
                r.error(v.span, "an empty `parallel` block; list the stages that run side by side");
            }
            Some(StageElement::Parallel(items.iter().filter_map(|i| stage_element(r, i, true)).collect()))
        }
    }
}

pub(crate) fn stage(r: &mut Reader, node: &Node) -> Option<Stage> {
    let id_hint = node.get("identifier").and_then(Node::as_scalar).unwrap_or("?").to_string();
    let what = format!("stage `{id_hint}`");
    let m = r.map(node, &what, STAGE_KEYS)?;
    let name = r.req_str(&m, "name");
    let identifier = r.req_str(&m, "identifier");
    if let Some(id) = &identifier {
        r.identifier(id, &what);
    }
    let stage_type = r.req(&m, "type").and_then(|n| {
        r.one_of(n, "stage type", StageType::NAMES, |s| match s {
            "Custom" => Some(StageType::Custom),
            "CI" => Some(StageType::Ci),
            "Deployment" => Some(StageType::Deployment),
            "Approval" => Some(StageType::Approval),
            "Pipeline" => Some(StageType::Pipeline),
            "SecurityTests" => Some(StageType::SecurityTests),
            "IACM" => Some(StageType::Iacm),
            "IDP" => Some(StageType::Idp),
            "FeatureFlag" => Some(StageType::FeatureFlag),
            _ => None,
        })
    });
    let spec = match (r.req(&m, "spec"), stage_type) {
        (Some(n), Some(t)) => stage_spec(r, n, t, &what),
        _ => None,
    };
    let s = Stage {
        description: r.opt_str(&m, "description"),
        variables: variables(r, &m),
        when: m.get("when").and_then(|n| when(r, n, true, &what)),
        failure_strategies: failure_strategies(r, &m),
        strategy: m.get("strategy").and_then(|n| strategy(r, n, &what)),
        timeout: r.opt_duration(&m, "timeout"),
        tags: tags(r, &m),
        delegate_selectors: r.opt_str_list(&m, "delegateSelectors"),
        span: node.span,
        name: name?,
        identifier: identifier?,
        stage_type: stage_type?,
        spec: spec?,
    };
    Some(s)
}

fn stage_spec(r: &mut Reader, node: &Node, t: StageType, what: &str) -> Option<StageSpec> {
    let swhat = format!("the spec of {what}");
    let known: &[&str] = match t {
        StageType::Custom | StageType::Approval => &["execution"],
        StageType::Pipeline => &["org", "project", "pipeline", "inputs", "outputs", "inputSetReferences"],
        StageType::Ci | StageType::SecurityTests => {
            &["cloneCodebase", "platform", "runtime", "infrastructure", "caching", "sharedPaths", "execution"]
        }
        // Kept as written: pipewright reads only their steps.
        StageType::Iacm | StageType::Idp | StageType::FeatureFlag => &[],
        StageType::Deployment => &[
            "deploymentType",
            "service",
            "services",
            "environment",
            "environments",
            "environmentGroup",
            "serviceConfig",
            "infrastructure",
            "execution",
        ],
    };
    let m = r.map(node, &swhat, known)?;
    if t == StageType::Pipeline {
        return chained(r, &m, what);
    }
    let execution = r.req(&m, "execution").and_then(|n| execution(r, n, what));
    let has_execution = execution.is_some();
    let mut spec = StageSpec {
        clone_codebase: None,
        platform: None,
        runtime: None,
        infrastructure: None,
        caching: None,
        deployment_type: None,
        service: None,
        environment: None,
        service_config: None,
        chained: None,
        services: None,
        environments: None,
        execution: execution.unwrap_or_default(),
    };
    if t.kept_only() {
        r.warn(
            node.span,
            format!("{what} is a `{}` stage: pipewright runs its steps as in a Custom stage; its other settings are kept, not used", serde_json::to_value(t).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()),
        );
    }
    match t {
        StageType::Ci | StageType::SecurityTests => {
            spec.clone_codebase = r.opt_bool(&m, "cloneCodebase");
            spec.platform = m.get("platform").map(Node::to_json);
            spec.runtime = m.get("runtime").map(Node::to_json);
            spec.infrastructure = m.get("infrastructure").map(|n| KeptBlock {
                reference: None,
                use_from_stage: None,
                raw: n.to_json(),
                span: n.span,
            });
            spec.caching = m.get("caching").map(Node::to_json);
        }
        StageType::Deployment => {
            spec.deployment_type = r.opt_str(&m, "deploymentType");
            spec.service = m.get("service").and_then(|n| service_config(r, n, what));
            spec.environment = m.get("environment").and_then(|n| environment_config(r, n, what));
            spec.service_config =
                m.get("serviceConfig").and_then(|n| legacy(r, n, "serviceRef", &format!("`serviceConfig` of {what}")));
            spec.infrastructure = m
                .get("infrastructure")
                .and_then(|n| legacy(r, n, "environmentRef", &format!("`infrastructure` of {what}")));
            spec.services = m.get("services").and_then(|n| multi_services(r, n, what));
            spec.environments = match (m.get("environments"), m.get("environmentGroup")) {
                (Some(n), _) => multi_environments(r, n, what, false),
                (None, Some(n)) => multi_environments(r, n, what, true),
                _ => None,
            };
            if spec.service.is_some() && spec.services.is_some() {
                r.error(m.key_span("services"), format!("{what} has both `service` and `services`; keep one"));
            }
            if spec.environment.is_some() && spec.environments.is_some() {
                r.error(
                    m.key_span(if m.get("environments").is_some() { "environments" } else { "environmentGroup" }),
                    format!("{what} has both `environment` and `environments` (or `environmentGroup`); keep one"),
                );
            }
            if spec.service.is_none() && spec.service_config.is_none() && spec.services.is_none() {
                r.error_help(
                    m.node.span,
                    format!("{what} is a Deployment stage without a service"),
                    "add `service: {serviceRef: …}` or `service: {useFromStage: {stage: …}}`",
                );
            }
            if spec.environment.is_none() && spec.infrastructure.is_none() && spec.environments.is_none() {
                r.error_help(
                    m.node.span,
                    format!("{what} is a Deployment stage without an environment"),
                    "add `environment: {environmentRef: …, infrastructureDefinitions: [...]}` or `environment: {useFromStage: {stage: …}}`",
                );
            }
        }
        _ => {}
    }
    has_execution.then_some(spec)
}

fn use_from_stage(r: &mut Reader, m: &MapView<'_>) -> Option<UseFromStage> {
    let n = m.get("useFromStage")?;
    let um = r.map(n, &format!("`useFromStage` of {}", m.what), &["stage"])?;
    Some(UseFromStage { stage: r.req_str(&um, "stage")? })
}

fn service_config(r: &mut Reader, node: &Node, what: &str) -> Option<ServiceConfig> {
    let m = r.map(node, &format!("the service of {what}"), &["serviceRef", "serviceInputs", "useFromStage"])?;
    let c = ServiceConfig {
        service_ref: r.opt_str(&m, "serviceRef"),
        service_inputs: m.get("serviceInputs").map(Node::to_json),
        use_from_stage: use_from_stage(r, &m),
        span: node.span,
    };
    match (&c.service_ref, &c.use_from_stage) {
        (None, None) => r.error(node.span, format!("the service of {what} needs `serviceRef` or `useFromStage`")),
        (Some(_), Some(_)) => {
            r.error(node.span, format!("the service of {what} has both `serviceRef` and `useFromStage`; keep one"))
        }
        _ => {}
    }
    Some(c)
}

fn environment_config(r: &mut Reader, node: &Node, what: &str) -> Option<EnvironmentConfig> {
    let m = r.map(
        node,
        &format!("the environment of {what}"),
        &["environmentRef", "deployToAll", "environmentInputs", "infrastructureDefinitions", "useFromStage"],
    )?;
    let infrastructure_definitions = r.list(&m, "infrastructureDefinitions", |r, n| {
        let im = r.map(n, "an infrastructure definition", &["identifier", "inputs"])?;
        Some(InfraRef { identifier: r.req_str(&im, "identifier")?, inputs: im.get("inputs").map(Node::to_json) })
    });
    let c = EnvironmentConfig {
        environment_ref: r.opt_str(&m, "environmentRef"),
        deploy_to_all: r.opt_bool(&m, "deployToAll"),
        environment_inputs: m.get("environmentInputs").map(Node::to_json),
        infrastructure_definitions,
        use_from_stage: use_from_stage(r, &m),
        span: node.span,
    };
    match (&c.environment_ref, &c.use_from_stage) {
        (None, None) => {
            r.error(node.span, format!("the environment of {what} needs `environmentRef` or `useFromStage`"))
        }
        (Some(_), Some(_)) => r.error(
            node.span,
            format!("the environment of {what} has both `environmentRef` and `useFromStage`; keep one"),
        ),
        _ => {}
    }
    Some(c)
}

/// The spec of a `Pipeline` stage.
fn chained(r: &mut Reader, m: &MapView<'_>, what: &str) -> Option<StageSpec> {
    let pipeline = r.req_str(m, "pipeline")?;
    if m.get("inputSetReferences").is_some() {
        r.warn(
            m.key_span("inputSetReferences"),
            format!("`inputSetReferences` of {what} are not read: give the chained pipeline's inputs under `inputs`"),
        );
    }
    let outputs = r.list(m, "outputs", |r, n| {
        let om = r.map(n, &format!("an output of {what}"), &["name", "value"])?;
        Some(NameValue { name: r.req_str(&om, "name")?, value: r.req_str(&om, "value")?, value_type: None })
    });
    Some(StageSpec {
        clone_codebase: None,
        platform: None,
        runtime: None,
        infrastructure: None,
        caching: None,
        deployment_type: None,
        service: None,
        environment: None,
        service_config: None,
        chained: Some(ChainedPipeline {
            org: r.opt_str(m, "org"),
            project: r.opt_str(m, "project"),
            pipeline,
            inputs: m.get("inputs").map(Node::to_json),
            outputs,
        }),
        services: None,
        environments: None,
        execution: Execution::default(),
    })
}

/// `metadata: {parallel: …}` of a `services` / `environments` / `environmentGroup` block (default: in sequence).
fn parallel_of(r: &mut Reader, m: &MapView<'_>) -> bool {
    let Some(meta) = m.get("metadata") else { return false };
    let Some(mm) = r.map(meta, &format!("`metadata` of {}", m.what), &["parallel"]) else { return false };
    r.opt_bool(&mm, "parallel").unwrap_or(false)
}

fn multi_services(r: &mut Reader, node: &Node, what: &str) -> Option<MultiServices> {
    let m = r.map(node, &format!("the services of {what}"), &["values", "metadata", "useFromStage"])?;
    let propagated = use_from_stage(r, &m);
    if propagated.is_some() {
        if m.get("values").is_some() {
            r.error(node.span, format!("the services of {what} have both `values` and `useFromStage`; keep one"));
        }
        return Some(MultiServices {
            values: Vec::new(),
            parallel: parallel_of(r, &m),
            use_from_stage: propagated,
            span: node.span,
        });
    }
    let vnode = r.req(&m, "values")?;
    let values = r.seq(vnode, &format!("`services.values` of {what}"))?;
    if values.is_empty() && vnode.as_scalar().is_none_or(|v| !v.contains("<+input>")) {
        r.error(node.span, format!("`services.values` of {what} is empty; list the services to deploy"));
    }
    let values = values.iter().filter_map(|v| service_config(r, v, what)).collect();
    Some(MultiServices { values, parallel: parallel_of(r, &m), use_from_stage: None, span: node.span })
}

fn multi_environments(r: &mut Reader, node: &Node, what: &str, group: bool) -> Option<MultiEnvironments> {
    let (label, keys, list): (&str, &[&str], &str) = if group {
        ("the environment group", &["envGroupRef", "deployToAll", "environments", "metadata"], "environments")
    } else {
        ("the environments", &["values", "metadata"], "values")
    };
    let m = r.map(node, &format!("{label} of {what}"), keys)?;
    let group_ref = if group { r.req_str(&m, "envGroupRef") } else { None };
    let values = match m.get(list) {
        Some(n) => r
            .seq(n, &format!("`{list}` of {label} of {what}"))?
            .iter()
            .filter_map(|v| environment_config(r, v, what))
            .collect(),
        None if group => Vec::new(),
        None => {
            r.req(&m, list);
            return None;
        }
    };
    if group && values.is_empty() {
        r.error_help(
            node.span,
            format!("{label} of {what} lists no environments"),
            "pipewright deploys to the environments the stage lists: list them under `environments:` (each with its `infrastructureDefinitions`, or `deployToAll: true`)",
        );
    }
    Some(MultiEnvironments { values, parallel: parallel_of(r, &m), group: group_ref, span: node.span })
}

fn legacy(r: &mut Reader, node: &Node, ref_key: &str, what: &str) -> Option<KeptBlock> {
    let m = r.map(node, what, &[])?;
    Some(KeptBlock {
        reference: r.opt_str(&m, ref_key),
        use_from_stage: use_from_stage(r, &m),
        raw: node.to_json(),
        span: node.span,
    })
}

fn execution(r: &mut Reader, node: &Node, what: &str) -> Option<Execution> {
    let m = r.map(node, &format!("the execution of {what}"), &["steps", "rollbackSteps"])?;
    let steps_node = r.req(&m, "steps")?;
    let steps = elements(r, steps_node, what)?;
    if matches!(&steps_node.yaml, Yaml::Seq(items) if items.is_empty()) || steps_node.is_null() {
        r.error(steps_node.span, format!("{what} has no steps; add at least one `- step:`"));
    }
    let rollback_steps = match m.get("rollbackSteps") {
        Some(n) => elements(r, n, what).unwrap_or_default(),
        None => Vec::new(),
    };
    Some(Execution { steps, rollback_steps, span: node.span })
}

fn elements(r: &mut Reader, node: &Node, what: &str) -> Option<Vec<ExecutionElement>> {
    let items = r.seq(node, &format!("the steps of {what}"))?;
    Some(items.iter().filter_map(|i| element(r, i, what)).collect())
}

fn element(r: &mut Reader, node: &Node, what: &str) -> Option<ExecutionElement> {
    let (key, v) = single_key(r, node, &format!("the steps of {what}"), &["step", "stepGroup", "parallel"])?;
    match key {
        "step" => step(r, v).map(|s| ExecutionElement::Step(Box::new(s))),
        "stepGroup" => step_group(r, v).map(|g| ExecutionElement::StepGroup(Box::new(g))),
        _ => {
            let items = r.seq(v, "a `parallel` block of steps")?;
            Some(ExecutionElement::Parallel(items.iter().filter_map(|i| element(r, i, what)).collect()))
        }
    }
}

pub(crate) fn step_group(r: &mut Reader, node: &Node) -> Option<StepGroup> {
    let what = format!("step group `{}`", node.get("identifier").and_then(Node::as_scalar).unwrap_or("?"));
    let m = r.map(node, &what, GROUP_KEYS)?;
    let name = r.req_str(&m, "name");
    let identifier = r.req_str(&m, "identifier");
    if let Some(id) = &identifier {
        r.identifier(id, &what);
    }
    let steps = r.req(&m, "steps").and_then(|n| elements(r, n, &what));
    Some(StepGroup {
        when: m.get("when").and_then(|n| when(r, n, false, &what)),
        failure_strategies: failure_strategies(r, &m),
        strategy: m.get("strategy").and_then(|n| strategy(r, n, &what)),
        timeout: r.opt_duration(&m, "timeout"),
        span: node.span,
        name: name?,
        identifier: identifier?,
        steps: steps?,
    })
}

pub(crate) fn step(r: &mut Reader, node: &Node) -> Option<Step> {
    let what = format!("step `{}`", node.get("identifier").and_then(Node::as_scalar).unwrap_or("?"));
    let m = r.map(node, &what, STEP_KEYS)?;
    let name = r.req_str(&m, "name");
    let identifier = r.req_str(&m, "identifier");
    if let Some(id) = &identifier {
        r.identifier(id, &what);
    }
    let step_type = r.req(&m, "type").and_then(|n| {
        let harness = n.as_scalar().and_then(|s| HARNESS_STEP_TYPES.iter().find(|t| **t == s));
        if let Some(t) = harness {
            r.warn(
                n.span,
                format!(
                    "{what} is a `{t}` step, which pipewright does not run itself: a run fails at it unless a step handler runs it (`stepHandlers` in `.harness/pipewright.yaml`) or a failure strategy lets it go on"
                ),
            );
            return Some(StepType::Harness(t));
        }
        if let Some(s) = n.as_scalar()
            && !StepType::OWN.contains(&s)
        {
            let hint = crate::read::did_you_mean(s, StepType::OWN.iter().chain(HARNESS_STEP_TYPES).copied());
            r.error(
                n.span,
                format!(
                    "unsupported step type `{s}`{hint}; pipewright runs {} and loads Harness's other step types",
                    StepType::NAMES.join(", ")
                ),
            );
            return None;
        }
        r.one_of(n, "step type", StepType::OWN, |s| match s {
            "ShellScript" => Some(StepType::ShellScript),
            "Run" => Some(StepType::Run),
            "Http" => Some(StepType::Http),
            "Wait" => Some(StepType::Wait),
            "HarnessApproval" => Some(StepType::HarnessApproval),
            "GitClone" => Some(StepType::GitClone),
            "Background" => Some(StepType::Background),
            _ => None,
        })
    });
    let spec = match (m.get("spec"), step_type) {
        // Another Harness type's spec is kept as written (some have none).
        (n, Some(t)) if t.spec_as_data() => Some(StepSpec::Harness(n.map_or(serde_json::json!({}), Node::to_json))),
        (Some(n), Some(t)) => step_spec(r, n, t, &what),
        (None, Some(_)) => {
            r.req(&m, "spec");
            None
        }
        _ => None,
    };
    Some(Step {
        description: r.opt_str(&m, "description"),
        timeout: r.opt_duration(&m, "timeout"),
        when: m.get("when").and_then(|n| when(r, n, false, &what)),
        failure_strategies: failure_strategies(r, &m),
        strategy: m.get("strategy").and_then(|n| strategy(r, n, &what)),
        span: node.span,
        name: name?,
        identifier: identifier?,
        step_type: step_type?,
        spec: spec?,
    })
}

fn shell(r: &mut Reader, n: &Node, what: &str) -> Option<Shell> {
    r.one_of(n, &format!("shell of {what}"), &["Bash", "Sh"], |s| match s {
        "Bash" | "bash" => Some(Shell::Bash),
        "Sh" | "sh" => Some(Shell::Sh),
        _ => None,
    })
}

fn output_variables(r: &mut Reader, m: &MapView<'_>, need_value: bool) -> Vec<OutputVariable> {
    r.list(m, "outputVariables", |r, n| {
        let om = r.map(n, "an output variable", &["name", "type", "value"])?;
        let name = r.req_str(&om, "name")?;
        let value = if need_value { r.req_str(&om, "value") } else { r.opt_str(&om, "value") };
        Some(OutputVariable { name, value_type: r.opt_str(&om, "type"), value })
    })
}

fn step_spec(r: &mut Reader, node: &Node, t: StepType, what: &str) -> Option<StepSpec> {
    let swhat = format!("the spec of {what}");
    match t {
        StepType::ShellScript => {
            let m = r.map(
                node,
                &swhat,
                &["shell", "source", "environmentVariables", "outputVariables", "executionTarget", "delegateSelectors"],
            )?;
            let sh = r.req(&m, "shell").and_then(|n| shell(r, n, what));
            let script = r.req(&m, "source").and_then(|n| {
                let sm = r.map(n, &format!("the source of {what}"), &["type", "spec"])?;
                let ty = r.req_str(&sm, "type")?;
                if ty.value != "Inline" {
                    r.error_help(
                        ty.span,
                        format!("source type `{}` is not supported; pipewright runs `Inline` scripts", ty.value),
                        "put the script under `source: {type: Inline, spec: {script: …}}`",
                    );
                    return None;
                }
                let spec = r.req(&sm, "spec")?;
                let im = r.map(spec, &format!("the inline source of {what}"), &["script"])?;
                r.req_str(&im, "script")
            });
            let environment_variables = r.list(&m, "environmentVariables", |r, n| {
                let em = r.map(n, "an environment variable", &["name", "type", "value"])?;
                Some(NameValue {
                    name: r.req_str(&em, "name")?,
                    value: r.req_str(&em, "value")?,
                    value_type: r.opt_str(&em, "type"),
                })
            });
            Some(StepSpec::ShellScript(ShellScriptSpec {
                environment_variables,
                output_variables: output_variables(r, &m, true),
                execution_target: m.get("executionTarget").map(Node::to_json),
                delegate_selectors: r.opt_str_list(&m, "delegateSelectors"),
                shell: sh?,
                script: script?,
            }))
        }
        StepType::Run => {
            const IGNORED: &[&str] = &["privileged", "resources", "imagePullPolicy", "runAsUser", "reports"];
            let mut known = vec!["shell", "command", "envVariables", "outputVariables", "image", "connectorRef"];
            known.extend_from_slice(IGNORED);
            let m = r.map(node, &swhat, &known)?;
            let sh = match m.get("shell") {
                Some(n) => r.one_of(n, &format!("shell of {what}"), &["Sh", "Bash"], |s| match s {
                    "Sh" => Some(Shell::Sh),
                    "Bash" => Some(Shell::Bash),
                    _ => None,
                }),
                None => None,
            };
            for key in ["image", "connectorRef"].iter().chain(IGNORED) {
                if m.get(key).is_some() {
                    r.warn(
                        m.key_span(key),
                        format!("`{key}` of {what} is ignored: pipewright runs `Run` steps as local processes"),
                    );
                }
            }
            let env_variables = match m.get("envVariables") {
                Some(n) => match n.to_json() {
                    serde_json::Value::Object(o) => Some(o),
                    _ => {
                        r.error(n.span, format!("`envVariables` of {what} must be a map of `NAME: value`"));
                        None
                    }
                },
                None => None,
            };
            let command = r.req_str(&m, "command");
            Some(StepSpec::Run(RunSpec {
                shell: sh,
                env_variables,
                output_variables: output_variables(r, &m, false),
                image: r.opt_str(&m, "image"),
                connector_ref: r.opt_str(&m, "connectorRef"),
                command: command?,
            }))
        }
        StepType::Http => {
            let m =
                r.map(node, &swhat, &["url", "method", "headers", "requestBody", "assertion", "outputVariables"])?;
            let url = r.req_str(&m, "url");
            let method = r.req(&m, "method").and_then(|n| {
                let s = r.string(n, "method")?;
                const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
                if !METHODS.contains(&s.value.as_str()) && !s.contains("<+") {
                    r.error(
                        n.span,
                        format!("unsupported HTTP method `{}`; supported: {}", s.value, METHODS.join(", ")),
                    );
                    return None;
                }
                Some(s)
            });
            let headers = r.list(&m, "headers", |r, n| {
                let hm = r.map(n, "a header", &["key", "value"])?;
                Some(HttpHeader { key: r.req_str(&hm, "key")?, value: r.req_str(&hm, "value")? })
            });
            Some(StepSpec::Http(HttpSpec {
                headers,
                request_body: r.opt_str(&m, "requestBody"),
                assertion: r.opt_str(&m, "assertion"),
                output_variables: output_variables(r, &m, true),
                url: url?,
                method: method?,
            }))
        }
        StepType::Wait => {
            let m = r.map(node, &swhat, &["duration"])?;
            let d = r.req(&m, "duration").and_then(|n| r.duration(n, &format!("`duration` of {what}")))?;
            Some(StepSpec::Wait(WaitSpec { duration: d }))
        }
        StepType::Harness(_) | StepType::GitClone | StepType::Background => Some(StepSpec::Harness(node.to_json())),
        StepType::HarnessApproval => {
            let m = r.map(
                node,
                &swhat,
                &[
                    "approvalMessage",
                    "includePipelineExecutionHistory",
                    "approvers",
                    "approverInputs",
                    "isAutoRejectEnabled",
                ],
            )?;
            let approvers = r.req(&m, "approvers").and_then(|n| {
                let am = r.map(
                    n,
                    &format!("the approvers of {what}"),
                    &["userGroups", "minimumCount", "disallowPipelineExecutor"],
                )?;
                Some(Approvers {
                    user_groups: r.opt_str_list(&am, "userGroups").unwrap_or_default(),
                    minimum_count: r.opt_u32(&am, "minimumCount").unwrap_or(1),
                    disallow_pipeline_executor: r.opt_bool(&am, "disallowPipelineExecutor").unwrap_or(false),
                })
            });
            let approver_inputs = r.list(&m, "approverInputs", |r, n| {
                let im = r.map(n, "an approver input", &["name", "defaultValue"])?;
                Some(ApproverInput { name: r.req_str(&im, "name")?, default_value: r.opt_str(&im, "defaultValue") })
            });
            Some(StepSpec::HarnessApproval(ApprovalSpec {
                approval_message: r.opt_str(&m, "approvalMessage"),
                include_pipeline_execution_history: r.opt_bool(&m, "includePipelineExecutionHistory"),
                approver_inputs,
                is_auto_reject_enabled: r.opt_bool(&m, "isAutoRejectEnabled"),
                approvers: approvers?,
            }))
        }
    }
}

/// The `variables:` list of a map.
pub fn variables(r: &mut Reader, m: &MapView<'_>) -> Vec<Variable> {
    let mut seen: Vec<String> = Vec::new();
    r.list(m, "variables", |r, n| {
        let vm = r.map(n, "a variable", &["name", "type", "value", "description", "required", "default"])?;
        let name = r.req_str(&vm, "name")?;
        if seen.contains(&name.value) {
            r.error(name.span, format!("variable `{}` is defined twice in {}", name.value, m.what));
        }
        seen.push(name.value.clone());
        let var_type = r.req(&vm, "type").and_then(|t| {
            r.one_of(t, "variable type", &["String", "Number", "Secret"], |s| match s {
                "String" => Some(VariableType::String),
                "Number" => Some(VariableType::Number),
                "Secret" => Some(VariableType::Secret),
                _ => None,
            })
        })?;
        let value = r.opt_str(&vm, "value");
        if var_type == VariableType::Number
            && let Some(v) = &value
            && !v.contains("<+")
            && v.trim().parse::<f64>().is_err()
        {
            r.error(
                v.span,
                format!("variable `{}` is a Number but its value `{}` is not a number", name.value, v.value),
            );
        }
        Some(Variable {
            var_type,
            description: r.opt_str(&vm, "description"),
            required: r.opt_bool(&vm, "required"),
            default: r.opt_str(&vm, "default"),
            value,
            span: n.span,
            name,
        })
    })
}

fn status(r: &mut Reader, n: &Node) -> Option<StatusCondition> {
    r.one_of(n, "status condition", &["Success", "Failure", "All"], |s| match s {
        "Success" => Some(StatusCondition::Success),
        "Failure" => Some(StatusCondition::Failure),
        "All" => Some(StatusCondition::All),
        _ => None,
    })
}

fn when(r: &mut Reader, node: &Node, is_stage: bool, what: &str) -> Option<When> {
    let m = r.map(node, &format!("`when` of {what}"), &["pipelineStatus", "stageStatus", "condition"])?;
    let pipeline_status = m.get("pipelineStatus").and_then(|n| status(r, n));
    let stage_status = m.get("stageStatus").and_then(|n| status(r, n));
    if is_stage && m.get("stageStatus").is_some() {
        r.error_help(
            m.key_span("stageStatus"),
            format!("{what} is a stage: its `when` uses `pipelineStatus`"),
            "rename `stageStatus` to `pipelineStatus`",
        );
    }
    if !is_stage && m.get("pipelineStatus").is_some() {
        r.error_help(
            m.key_span("pipelineStatus"),
            format!("`when` of {what} uses `stageStatus`, not `pipelineStatus`"),
            "rename `pipelineStatus` to `stageStatus`",
        );
    }
    let key = if is_stage { "pipelineStatus" } else { "stageStatus" };
    if m.get(key).is_none() && m.get(if is_stage { "stageStatus" } else { "pipelineStatus" }).is_none() {
        r.error_help(
            m.node.span,
            format!("missing required field `{key}` in `when` of {what}"),
            format!("add `{key}: Success` (or Failure, All)"),
        );
    }
    Some(When { pipeline_status, stage_status, condition: r.opt_str(&m, "condition") })
}

fn failure_strategies(r: &mut Reader, m: &MapView<'_>) -> Vec<FailureStrategy> {
    let what = m.what.clone();
    r.list(m, "failureStrategies", |r, n| {
        let fm = r.map(n, &format!("a failure strategy of {what}"), &["onFailure"])?;
        let on = r.req(&fm, "onFailure")?;
        let om = r.map(on, &format!("`onFailure` of {what}"), &["errors", "action"])?;
        let errors = r.list(&om, "errors", |r, e| {
            r.one_of(e, "error type", ErrorType::NAMES, |s| {
                ErrorType::NAMES.iter().position(|n| *n == s).map(|i| ERROR_TYPES[i])
            })
        });
        if om.get("errors").is_none() {
            r.error(
                om.node.span,
                format!("missing required field `errors` in `onFailure` of {what}; e.g. `errors: [AllErrors]`"),
            );
        }
        let action = r.req(&om, "action").and_then(|a| action(r, a, &what, 0))?;
        Some(FailureStrategy { on_failure: OnFailure { errors, action } })
    })
}

const ERROR_TYPES: &[ErrorType] = &[
    ErrorType::AllErrors,
    ErrorType::Unknown,
    ErrorType::Timeout,
    ErrorType::Authentication,
    ErrorType::Authorization,
    ErrorType::Connectivity,
    ErrorType::DelegateProvisioning,
    ErrorType::Verification,
    ErrorType::PolicyEvaluationFailure,
    ErrorType::InputTimeoutError,
    ErrorType::ApprovalRejection,
    ErrorType::DelegateRestart,
    ErrorType::UserMarkedFailure,
];

fn action(r: &mut Reader, node: &Node, what: &str, depth: u32) -> Option<Action> {
    let m = r.map(node, &format!("a failure action of {what}"), &["type", "spec"])?;
    let t = r.req(&m, "type")?;
    let name = r.one_of(t, "failure action", Action::NAMES, |s| Action::NAMES.contains(&s).then(|| s.to_string()))?;
    let holder = |r: &mut Reader, sm: &MapView<'_>, key: &str| -> Option<Box<ActionHolder>> {
        let n = r.req(sm, key)?;
        let hm = r.map(n, &format!("`{key}` of {what}"), &["action"])?;
        let a = r.req(&hm, "action")?;
        if depth > 4 {
            r.error(a.span, "failure actions nest too deeply");
            return None;
        }
        let inner = action(r, a, what, depth + 1)?;
        if matches!(inner, Action::Retry(_)) {
            r.error(a.span, format!("`{key}` cannot be another Retry"));
        }
        Some(Box::new(ActionHolder { action: inner }))
    };
    Some(match name.as_str() {
        "Retry" => {
            let spec = r.req(&m, "spec")?;
            let sm =
                r.map(spec, &format!("the Retry spec of {what}"), &["retryCount", "retryIntervals", "onRetryFailure"])?;
            let retry_count = r.opt_u32(&sm, "retryCount");
            if sm.get("retryCount").is_none() {
                r.error(sm.node.span, format!("missing required field `retryCount` in the Retry spec of {what}"));
            }
            let retry_intervals = r.list(&sm, "retryIntervals", |r, n| r.duration(n, "a retry interval"));
            if sm.get("retryIntervals").is_none() {
                r.error(sm.node.span, format!("missing required field `retryIntervals` in the Retry spec of {what}; e.g. `retryIntervals: [10s]`"));
            }
            let on = holder(r, &sm, "onRetryFailure")?;
            Action::Retry(RetrySpec { retry_count: retry_count?, retry_intervals, on_retry_failure: on })
        }
        "ManualIntervention" => {
            let spec = r.req(&m, "spec")?;
            let sm = r.map(spec, &format!("the ManualIntervention spec of {what}"), &["timeout", "onTimeout"])?;
            let timeout = r.opt_duration(&sm, "timeout");
            let on = holder(r, &sm, "onTimeout")?;
            Action::ManualIntervention(ManualInterventionSpec { timeout, on_timeout: on })
        }
        "Ignore" => Action::Ignore,
        "Abort" => Action::Abort,
        "MarkAsSuccess" => Action::MarkAsSuccess,
        "MarkAsFailure" => Action::MarkAsFailure,
        "StageRollback" => Action::StageRollback,
        _ => Action::PipelineRollback,
    })
}

fn strategy(r: &mut Reader, node: &Node, what: &str) -> Option<Strategy> {
    let m = r.map(node, &format!("the strategy of {what}"), &["matrix", "repeat", "parallelism"])?;
    let present: Vec<&str> = ["matrix", "repeat", "parallelism"].into_iter().filter(|k| m.get(k).is_some()).collect();
    if present.len() != 1 {
        r.error(node.span, format!("the strategy of {what} needs exactly one of `matrix`, `repeat` or `parallelism`"));
        return None;
    }
    match present[0] {
        "matrix" => {
            let n = m.get("matrix")?;
            let mm = r.map(n, &format!("the matrix of {what}"), &[])?;
            let mut axes = serde_json::Map::new();
            for (k, v) in mm.entries() {
                let key = k.as_scalar().unwrap_or_default();
                if matches!(key, "exclude" | "maxConcurrency" | "nodeName") {
                    continue;
                }
                match &v.yaml {
                    Yaml::Seq(items) if items.is_empty() => {
                        r.error(v.span, format!("matrix axis `{key}` of {what} has no values"))
                    }
                    Yaml::Seq(_) => {}
                    Yaml::Scalar(s, _) if s.contains("<+") => {}
                    // Harness ignores a key of the matrix that is not a list (a misplaced setting, a number):
                    // so does pipewright, saying so.
                    _ => {
                        r.warn(
                            v.span,
                            format!(
                                "`{key}` in the matrix of {what} is not a list of values, so it is not an axis and is ignored (axes are lists, e.g. `{key}: [a, b]`)"
                            ),
                        );
                        continue;
                    }
                }
                axes.insert(key.to_string(), v.to_json());
            }
            if axes.is_empty() {
                r.error(n.span, format!("the matrix of {what} has no axes; e.g. `os: [linux, mac]`"));
            }
            let exclude = r.list(&mm, "exclude", |r, e| match e.to_json() {
                serde_json::Value::Object(o) => Some(o),
                _ => {
                    r.error(e.span, "each `exclude` entry is a map of axis: value");
                    None
                }
            });
            Some(Strategy::Matrix(Matrix {
                axes,
                exclude,
                max_concurrency: r.opt_u32(&mm, "maxConcurrency"),
                node_name: r.opt_str(&mm, "nodeName"),
                span: n.span,
            }))
        }
        "repeat" => {
            let n = m.get("repeat")?;
            let rm =
                r.map(n, &format!("the repeat strategy of {what}"), &["times", "items", "maxConcurrency", "nodeName"])?;
            let times = r.opt_u32(&rm, "times");
            let items = rm.get("items").and_then(|i| match i.to_json() {
                serde_json::Value::Array(a) => Some(a),
                serde_json::Value::String(s) if s.contains("<+") => Some(vec![serde_json::Value::String(s)]),
                _ => {
                    r.error(i.span, "`items` of a repeat strategy must be a list");
                    None
                }
            });
            if rm.get("times").is_none() == rm.get("items").is_none() {
                r.error(n.span, format!("the repeat strategy of {what} needs exactly one of `times` or `items`"));
            }
            Some(Strategy::Repeat(Repeat {
                times,
                items,
                max_concurrency: r.opt_u32(&rm, "maxConcurrency"),
                node_name: r.opt_str(&rm, "nodeName"),
            }))
        }
        _ => {
            let n = m.get("parallelism")?;
            let v = r.opt_u32(&m, "parallelism")?;
            if v == 0 {
                r.error(n.span, "`parallelism` must be at least 1");
            }
            Some(Strategy::Parallelism(Spanned::new(v, n.span)))
        }
    }
}

const ENTITY_KEYS: &[&str] = &["name", "identifier", "orgIdentifier", "projectIdentifier", "description", "tags"];

fn entity_keys(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = ENTITY_KEYS.to_vec();
    v.extend_from_slice(extra);
    v
}

/// The shared entity fields. Read even when some are missing, so every problem is reported.
fn meta(r: &mut Reader, m: &MapView<'_>) -> Option<EntityMeta> {
    let identifier = r.req_str(m, "identifier");
    if let Some(id) = &identifier {
        r.identifier(id, &m.what);
    }
    let name = r.req_str(m, "name");
    let org_identifier = r.opt_str(m, "orgIdentifier");
    let project_identifier = r.opt_str(m, "projectIdentifier");
    let description = r.opt_str(m, "description");
    let tags = tags(r, m);
    Some(EntityMeta { name: name?, identifier: identifier?, org_identifier, project_identifier, description, tags })
}

/// Read a `service:` entity.
pub fn service(r: &mut Reader, node: &Node) -> Option<Service> {
    let m = r.map(node, "the service", &entity_keys(&["serviceDefinition"]))?;
    let meta = meta(r, &m);
    let mut deployment_type = None;
    let mut vars = Vec::new();
    if let Some(def) = m.get("serviceDefinition") {
        let dm = r.map(def, "the service definition", &["type", "spec"])?;
        deployment_type = r.opt_str(&dm, "type");
        if let Some(spec) = dm.get("spec") {
            let sm = r.map(spec, "the service definition spec", &[])?;
            vars = variables(r, &sm);
        }
    }
    Some(Service {
        deployment_type,
        variables: vars,
        service_definition: m.get("serviceDefinition").map(Node::to_json),
        meta: meta?,
    })
}

/// Read an `environment:` entity.
pub fn environment(r: &mut Reader, node: &Node) -> Option<Environment> {
    let m = r.map(node, "the environment", &entity_keys(&["type", "variables"]))?;
    let meta = meta(r, &m);
    let env_type = r.req(&m, "type").and_then(|t| {
        r.one_of(t, "environment type", &["Production", "PreProduction"], |s| match s {
            "Production" => Some(EnvironmentType::Production),
            "PreProduction" => Some(EnvironmentType::PreProduction),
            _ => None,
        })
    });
    Some(Environment { variables: variables(r, &m), meta: meta?, env_type: env_type? })
}

/// Read an `infrastructureDefinition:` entity.
pub fn infrastructure(r: &mut Reader, node: &Node) -> Option<InfrastructureDefinition> {
    let m = r.map(
        node,
        "the infrastructure definition",
        &entity_keys(&["environmentRef", "deploymentType", "type", "spec"]),
    )?;
    let meta = meta(r, &m);
    let environment_ref = r.req_str(&m, "environmentRef");
    let spec = match m.get("spec").map(Node::to_json) {
        Some(serde_json::Value::Object(o)) => o,
        Some(_) => {
            r.error(m.key_span("spec"), "`spec` of the infrastructure definition must be a map");
            serde_json::Map::new()
        }
        None => serde_json::Map::new(),
    };
    Some(InfrastructureDefinition {
        deployment_type: r.opt_str(&m, "deploymentType"),
        infra_type: r.opt_str(&m, "type"),
        spec,
        meta: meta?,
        environment_ref: environment_ref?,
    })
}

/// Read an `inputSet:` entity.
pub fn input_set(r: &mut Reader, node: &Node) -> Option<InputSet> {
    let m = r.map(node, "the input set", &entity_keys(&["pipeline"]))?;
    let meta = meta(r, &m);
    let p = r.req(&m, "pipeline");
    let pipeline_identifier = p.and_then(|p| {
        let pm = r.map(p, "the input set's pipeline", &[])?;
        r.req_str(&pm, "identifier")
    });
    Some(InputSet { pipeline_identifier, pipeline: p?.to_json(), meta: meta? })
}

/// Read an `overlayInputSet:` entity.
pub fn overlay_input_set(r: &mut Reader, node: &Node) -> Option<OverlayInputSet> {
    let m = r.map(node, "the overlay input set", &entity_keys(&["inputSetReferences", "pipelineIdentifier"]))?;
    let meta = meta(r, &m);
    let refs = r.req(&m, "inputSetReferences").and_then(|n| {
        let items = r.seq(n, "`inputSetReferences`")?;
        Some(items.iter().filter_map(|i| r.string(i, "an input set reference")).collect::<Vec<_>>())
    });
    if let Some(v) = &refs
        && v.is_empty()
    {
        r.error(m.key_span("inputSetReferences"), "`inputSetReferences` lists no input sets");
    }
    Some(OverlayInputSet {
        pipeline_identifier: r.opt_str(&m, "pipelineIdentifier"),
        input_set_references: refs?,
        meta: meta?,
    })
}

/// Read the value of a settings file's `stepHandlers:` key: step type → the script that runs it.
pub fn step_handlers(r: &mut Reader, node: &Node) -> std::collections::BTreeMap<String, StepHandler> {
    let mut out = std::collections::BTreeMap::new();
    let Some(m) = r.map(node, "`stepHandlers`", &[]) else { return out };
    for (k, v) in m.entries() {
        let Some(t) = k.as_scalar() else { continue };
        let what = format!("the handler of `{t}` steps");
        if StepType::NAMES.contains(&t) {
            r.warn(k.span, format!("pipewright runs `{t}` steps itself; this handler is never used"));
            continue;
        }
        if !HARNESS_STEP_TYPES.contains(&t) && !crate::BUILTIN_HANDLED.contains(&t) {
            let hint = crate::read::did_you_mean(t, HARNESS_STEP_TYPES.iter().chain(crate::BUILTIN_HANDLED).copied());
            r.warn(
                k.span,
                format!(
                    "`{t}` is not a Harness step type{hint}; this handler is used only by steps of that exact type"
                ),
            );
        }
        let Some(hm) = r.map(v, &what, &["shell", "script", "outputVariables"]) else { continue };
        let Some(script) = r.req_str(&hm, "script") else { continue };
        out.insert(
            t.to_string(),
            StepHandler {
                shell: hm.get("shell").and_then(|n| shell(r, n, &what)).unwrap_or(Shell::Bash),
                script,
                output_variables: output_variables(r, &hm, false),
            },
        );
    }
    out
}
