//! The `pipewright` binary: one clap CLI over the workspace's crates. This file owns argument parsing and the
//! dispatch to each command; each command's behaviour lives in `commands/`.

mod commands;
mod credentials;

/// mimalloc: the server's request path allocates heavily across threads, where glibc's allocator spent a
/// quarter of the CPU time (measured with perf on the history benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Harness-style pipelines, run anywhere: validate, plan and run pipelines, or only the stages you select.
#[derive(Parser)]
#[command(name = "pipewright", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to print results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// Machine-readable JSON.
    Json,
}

/// Where the execution history lives: the local state directory, or a pipewright server.
#[derive(Args, Clone, Debug)]
pub struct StateArgs {
    /// The state directory (SQLite database, working directories).
    #[arg(long, env = "PIPEWRIGHT_STATE_DIR", default_value = ".pipewright")]
    pub state_dir: PathBuf,
    /// `--database-url-file FILE` (or `PIPEWRIGHT_DATABASE_URL`): keep the history in this PostgreSQL database.
    #[command(flatten)]
    pub database_url: credentials::Secret<credentials::DatabaseUrl>,
    /// Talk to this pipewright server instead of the local state directory (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "PIPEWRIGHT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// `--token-file FILE` (or `PIPEWRIGHT_TOKEN`): the API token for --server.
    #[command(flatten)]
    pub token: credentials::Secret<credentials::Token>,
    /// The organization on the server (history; pipelines say their own).
    #[arg(long, env = "PIPEWRIGHT_ORG", default_value = "default")]
    pub org: String,
    /// The project on the server (history; pipelines say their own).
    #[arg(long, env = "PIPEWRIGHT_PROJECT", default_value = "default")]
    pub project: String,
}

impl StateArgs {
    /// The organization to filter history by: only with --server (the local history holds every one).
    pub fn remote_org(&self) -> Option<String> {
        self.server.as_ref().map(|_| self.org.clone())
    }

    /// The project to filter history by, with --server.
    pub fn remote_project(&self) -> Option<String> {
        self.server.as_ref().map(|_| self.project.clone())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline and entity files (service, environment, infrastructureDefinition, inputSet) for errors.
    #[command(
        after_help = "Examples:\n  pipewright validate examples/build-test-deploy.yaml\n  pipewright validate examples/            # every .yaml/.yml file below, recursively\n  pipewright validate --output json pipeline.yaml\n\nExit status: 0 when every file is valid (warnings allowed), 1 otherwise."
    )]
    Validate {
        /// Files or directories to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Output format: one summary line per file, or one JSON object per file (JSON Lines).
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// More template files, besides those of each file's `.harness/` folder.
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Print a pipeline with its templates resolved: the YAML an execution of it records and runs.
    #[command(
        after_help = "Examples:\n  pipewright render .harness/pipelines/release.yaml\n  pipewright render pipeline.yaml --templates ../platform-templates\n\nTemplates are read from the `.harness/` folder the file is in (or next to it) and from --templates.\nExit status: 0 when the pipeline is valid, 1 otherwise."
    )]
    Render {
        /// The pipeline YAML file.
        file: PathBuf,
        /// More template files, besides those of the `.harness/` folder.
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Print the JSON Schema of pipeline YAML, for editors.
    #[command(after_help = "Example:\n  pipewright schema > pipeline.schema.json")]
    Schema,
    /// Run a pipeline, recording the execution in the state directory.
    #[command(
        after_help = "Examples:\n  pipewright run examples/build-test-deploy.yaml\n  pipewright run pipeline.yaml --input pipeline.variables.version=2.1.0\n  pipewright run pipeline.yaml --inputs-file input-sets/release.yaml --inputs-file overrides.yaml\n  pipewright run pipeline.yaml --output json\n\nExit status: 0 when the execution ends Success, 1 otherwise (2 for bad arguments)."
    )]
    Run(commands::run::RunArgs),
    /// Show what a run would do — what runs, is skipped or is reused, the inputs it asks, every unmet dependency — without running anything.
    #[command(
        after_help = "Examples:\n  pipewright plan examples/build-test-deploy.yaml --stage deploy_prod\n  pipewright plan examples/build-test-deploy.yaml --stage deploy_prod --with-deps\n  pipewright plan pipeline.yaml --stage deploy_prod --from-execution 01JD3\n  pipewright plan pipeline.yaml --stage smoke_dev --expr pipeline.stages.deploy_dev.spec.execution.steps.rollout.output.outputVariables.url=https://dev\n\nExit status: 0 when the plan is satisfiable, 3 when it is not, 1 when the pipeline is invalid, 2 for a bad selection."
    )]
    Plan(commands::plan::PlanArgs),
    /// Run an execution again: same pipeline YAML, inputs and selection (`--stage` re-runs only some stages,
    /// reusing their dependencies from that execution).
    #[command(
        after_help = "Examples:\n  pipewright rerun 01JD3\n  pipewright rerun 01JD3 --input pipeline.variables.version=2.1.1\n  pipewright rerun 01JD3 --stage deploy_prod        # build and deploy_dev values are reused\n  pipewright rerun 01JD3 --latest                   # the pipeline file as it is now"
    )]
    Rerun(commands::rerun::RerunArgs),
    /// Resume a failed or aborted execution from its failed stage, reusing what succeeded.
    #[command(
        after_help = "Examples:\n  pipewright retry 01JD3\n  pipewright retry 01JD3 --only-failed            # in a parallel block, only the stages that failed\n  pipewright retry 01JD3 --stage deploy_dev"
    )]
    Retry(commands::rerun::RetryArgs),
    /// Go on with an execution whose process died (`kill -9`, a crash, a reboot): what finished is kept, the
    /// step that was running gets a new attempt, waiting approvals keep waiting. Servers do this themselves.
    #[command(
        after_help = "Examples:\n  pipewright resume 01JD3\n  PIPEWRIGHT_LEASE_SECONDS=5 pipewright run pipeline.yaml   # a shorter hold: resumable sooner after a crash\n\nAn execution another live process runs is refused: it can be taken over only once that process stops renewing its lease (PIPEWRIGHT_LEASE_SECONDS, 15 by default)."
    )]
    Resume(commands::rerun::ResumeArgs),
    /// List executions, newest first.
    #[command(
        after_help = "Examples:\n  pipewright history\n  pipewright history --pipeline build_test_deploy --status Failed --limit 5\n  pipewright history --output json"
    )]
    History(commands::history::HistoryArgs),
    /// Show one execution: stages, steps, attempts, statuses, durations, failures, outputs.
    #[command(
        after_help = "Examples:\n  pipewright show 01JD3…\n  pipewright show 01JD3 --output json      # a unique prefix of the id is enough"
    )]
    Show(commands::show::ShowArgs),
    /// Print the logs of an execution.
    #[command(
        after_help = "Examples:\n  pipewright logs 01JD3\n  pipewright logs 01JD3 --stage build --step compile\n  pipewright logs 01JD3 --follow"
    )]
    Logs(commands::logs::LogsArgs),
    /// Abort a running execution (from another terminal).
    #[command(after_help = "Example:\n  pipewright abort 01JD3")]
    Abort(commands::decide::ExecArg),
    /// Approve a HarnessApproval step that is waiting.
    #[command(
        after_help = "Examples:\n  pipewright approve 01JD3\n  pipewright approve 01JD3 --node gate.approve --comment 'ship it' --input ticket=REL-7"
    )]
    Approve(commands::decide::ApprovalArgs),
    /// Reject a HarnessApproval step that is waiting.
    #[command(after_help = "Example:\n  pipewright reject 01JD3 --comment 'not today'")]
    Reject(commands::decide::ApprovalArgs),
    /// Decide for a step waiting in InterventionWaiting (ManualIntervention failure strategy).
    #[command(after_help = "Example:\n  pipewright intervene 01JD3 --node build.compile --action retry")]
    Intervene(commands::decide::InterveneArgs),
    /// Give the runtime inputs a running execution asks for (`<+input>.executionInput()`).
    #[command(
        after_help = "Example:\n  pipewright input 01JD3 --input pipeline.stages.deploy.variables.region=eu-west-1\n\n`pipewright show EXEC` lists what an execution waits for; values are checked as at start."
    )]
    Input(commands::decide::InputArgs),
    /// Serve the REST API (OpenAPI at /api/v1/openapi.json), live logs and RBAC over the state directory.
    #[command(
        after_help = "Examples:\n  pipewright serve\n  pipewright serve --listen 0.0.0.0:8080 --admin-password-file /run/secrets/admin\n  pipewright serve --database-url-file /run/secrets/database-url --no-local-executor\n\nWith no --admin-password-file, the first start prints a one-time bootstrap token for the `admin` user.\nServers on one database serve the same history and take over each other's executions; they must share the secret key (PIPEWRIGHT_SECRET_KEY, or one state directory)."
    )]
    Serve(commands::serve::ServeArgs),
    /// Manage users on a server.
    #[command(subcommand)]
    User(commands::admin::UserCmd),
    /// Manage user groups (who may decide approvals) on a server.
    #[command(subcommand)]
    Group(commands::admin::GroupCmd),
    /// Manage roles and role bindings on a server.
    #[command(subcommand)]
    Role(commands::admin::RoleCmd),
    /// Manage API tokens on a server.
    #[command(subcommand)]
    Token(commands::admin::TokenCmd),
    /// Manage how secret values are kept at rest (key rotation).
    #[command(subcommand)]
    Secret(commands::secret::SecretCmd),
    /// Run steps for a server (which runs with --no-local-executor): claim tasks over HTTP, run them here,
    /// send back their output and outcome.
    #[command(
        after_help = "Example:\n  pipewright agents register builder-1 --tags linux,docker > /etc/pipewright/agent.token\n  pipewright agent --server http://ci.example:8080 --token-file /etc/pipewright/agent.token --concurrency 4\n\nThe credential (in the file, or in PIPEWRIGHT_TOKEN) is the agent's own, printed once by `pipewright agents register` (or `pipewright agents credential NAME`); the agent's scope and tags are set there."
    )]
    Agent(commands::agent::AgentArgs),
    /// List, drain, revoke or re-activate agents on a server.
    #[command(subcommand)]
    Agents(commands::agent::AgentsCmd),
}

/// How step processes are confined (local runs and the server).
#[derive(Args, Clone, Debug, Default)]
pub struct StepArgs {
    /// How steps are isolated: `landlock` (the default: each step reaches only its workspace, a private
    /// temporary directory and read-only system paths) or `none` (steps run with pipewright's own rights).
    #[arg(long, env = "PIPEWRIGHT_STEP_ISOLATION", value_enum, value_name = "MODE")]
    pub step_isolation: Option<IsolationMode>,
    /// The unprivileged user steps run as when pipewright runs as root (default `nobody`).
    #[arg(long, env = "PIPEWRIGHT_STEP_USER", value_name = "USER")]
    pub step_user: Option<String>,
    /// Another directory steps may read and execute from (repeatable), e.g. a tool cache; in the environment,
    /// several separated by `:`.
    #[arg(long = "step-read-path", env = "PIPEWRIGHT_STEP_READ_PATH", value_delimiter = ':', value_name = "DIR")]
    pub step_read_paths: Vec<PathBuf>,
    /// What a stage's steps may reach over the network: `isolated` (outbound only, every address of this
    /// host refused; the default of `serve` and `agent`, needs root and slirp4netns), `none` (the stage's own
    /// loopback only) or `host` (this host's network as it is; the default of `run`).
    #[arg(long, env = "PIPEWRIGHT_STEP_NETWORK", value_enum, value_name = "MODE")]
    pub step_network: Option<NetworkMode>,
}

/// Step network modes (`engine::sandbox::Network`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// Outbound connections only; loopback, the host's own addresses and link-local are refused.
    Isolated,
    /// Only the stage's own loopback.
    None,
    /// The host's network as it is.
    Host,
}

impl NetworkMode {
    /// The engine's mode.
    pub fn engine(self) -> engine::sandbox::Network {
        match self {
            NetworkMode::Isolated => engine::sandbox::Network::Isolated,
            NetworkMode::None => engine::sandbox::Network::None,
            NetworkMode::Host => engine::sandbox::Network::Host,
        }
    }
}

impl StepArgs {
    /// Whether any was given (they apply to local runs; a server uses its own).
    pub fn given(&self) -> bool {
        self.step_isolation.is_some()
            || self.step_user.is_some()
            || !self.step_read_paths.is_empty()
            || self.step_network.is_some()
    }
}

/// Step isolation modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationMode {
    /// Landlock confinement (and an unprivileged user when running as root).
    Landlock,
    /// No confinement.
    None,
}

fn main() -> ExitCode {
    // The step launcher (`pipewright __step-sandbox …`) confines itself and becomes the step: no runtime.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == engine::sandbox::LAUNCHER_ARG) {
        engine::sandbox::launcher_main(&args[2..]);
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn async_main() -> ExitCode {
    // `pipewright history | head`: a closed stdout ends the program quietly, as it does for other tools.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, output, templates } => commands::validate::run(&files, output, templates.as_deref()),
        Command::Render { file, templates } => commands::validate::render(&file, templates.as_deref()),
        Command::Schema => commands::schema::run(),
        Command::Run(a) => commands::run::run(a).await,
        Command::Plan(a) => commands::plan::run(a).await,
        Command::Rerun(a) => commands::rerun::rerun(a).await,
        Command::Retry(a) => commands::rerun::retry(a).await,
        Command::Resume(a) => commands::rerun::resume(a).await,
        Command::History(a) => commands::history::run(a).await,
        Command::Show(a) => commands::show::run(a).await,
        Command::Logs(a) => commands::logs::run(a).await,
        Command::Abort(a) => commands::decide::abort(a).await,
        Command::Approve(a) => commands::decide::approval(a, store::DecisionAction::Approve).await,
        Command::Reject(a) => commands::decide::approval(a, store::DecisionAction::Reject).await,
        Command::Intervene(a) => commands::decide::intervene(a).await,
        Command::Input(a) => commands::decide::input(a).await,
        Command::Serve(a) => commands::serve::run(a).await,
        Command::User(c) => commands::admin::user(c).await,
        Command::Group(c) => commands::admin::group(c).await,
        Command::Role(c) => commands::admin::role(c).await,
        Command::Token(c) => commands::admin::token(c).await,
        Command::Secret(c) => commands::secret::run(c).await,
        Command::Agent(a) => commands::agent::run(a).await,
        Command::Agents(c) => commands::agent::manage(c).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
