//! `pipewright serve`: open the state directory, start the server on the address given (printing the address
//! it bound, and a one-time bootstrap token at first start when no admin password was given), and shut down
//! gracefully on Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Settings for every pipeline this server runs: `stepHandlers` (the scripts that run the step types
    /// pipewright does not run itself), as in a repository's `.harness/pipewright.yaml`.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one; the address bound is printed).
    #[arg(long, env = "PIPEWRIGHT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The state directory (SQLite database, working directories).
    #[arg(long, env = "PIPEWRIGHT_STATE_DIR", default_value = ".pipewright")]
    pub state_dir: PathBuf,
    /// `--database-url-file FILE` (or `PIPEWRIGHT_DATABASE_URL`): keep state in this PostgreSQL database. Any
    /// number of servers on one database serve the same history and take over each other's executions; they
    /// must share the secret key (PIPEWRIGHT_SECRET_KEY, or one state directory).
    #[command(flatten)]
    pub database_url: crate::credentials::Secret<crate::credentials::DatabaseUrl>,
    /// Run no steps on this server: every step becomes a task that remote `pipewright agent`s claim (steps
    /// with `delegateSelectors` go only to agents with those tags; with no such agent online they wait).
    #[arg(long)]
    pub no_local_executor: bool,
    /// A file holding the `admin` user's password (set at first start, or reset).
    #[arg(long, value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body: usize,
    /// Longest a request may take, in seconds (live log streams excepted); slower ones get 408.
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Seconds running executions get to finish at shutdown before they are aborted.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Seconds a client may take to send a request's head; slower connections are closed (slow headers).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Open connections at once, in total (at the cap, the oldest that has not sent a request is closed).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Open connections at once from one client address (at the cap, its oldest silent one is closed).
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Live-log streams open at once, in total (more get 429).
    #[arg(long, default_value_t = 1000)]
    pub max_streams: usize,
    /// Live-log streams open at once per user or service account (more get 429).
    #[arg(long, default_value_t = 20)]
    pub max_streams_per_user: usize,
    /// Largest pipeline YAML saved or planned, in bytes (larger get 413).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_pipeline_bytes: usize,
    /// Plans (plan, run, re-run, retry) one user may have in progress at once (more get 429).
    #[arg(long, default_value_t = 2)]
    pub max_plans_per_user: usize,
    /// Iterations one node's looping strategy may have (matrix combinations, repeat items, parallelism);
    /// counted before anything is expanded, larger strategies fail the node.
    #[arg(long, default_value_t = spec::MAX_ITERATIONS)]
    pub max_iterations: usize,
    /// Nodes one execution's looping strategies may create in all.
    #[arg(long, default_value_t = 100_000)]
    pub max_nodes: usize,
    /// Stages (stage iterations included) one execution runs at once, whatever its parallel blocks and
    /// `maxConcurrency` say; the others wait, Queued, for a slot.
    #[arg(long, default_value_t = engine::looping::STAGES_AT_ONCE)]
    pub max_parallel_stages: usize,
    /// Bytes of log one execution may store; the log is cut there with a line saying so (lines longer than
    /// 64 KiB are cut too).
    #[arg(long, default_value_t = engine::MAX_LOG_BYTES)]
    pub max_log_bytes: u64,
    /// Seconds this server's hold on an execution lasts without a heartbeat (renewed every third of it).
    /// Executions whose process died are taken over once their lease runs out.
    #[arg(long, env = "PIPEWRIGHT_LEASE_SECONDS", default_value_t = 15.0)]
    pub lease_seconds: f64,
    #[command(flatten)]
    pub steps: crate::StepArgs,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Serve.
pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ =
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx::postgres::notice=warn")
            }))
            .with_writer(std::io::stderr)
            .try_init();
    let admin_password = match &a.admin_password_file {
        Some(f) => {
            let pw = crate::credentials::read_file(f)
                .with_context(|| format!("{}: cannot read the password file", f.display()))?;
            anyhow::ensure!(
                pw.chars().count() >= 8,
                "{}: the admin password must have at least 8 characters",
                f.display()
            );
            Some(pw)
        }
        None => None,
    };
    // Step handlers: their scripts live next to the settings file, which confined steps may read.
    let settings = super::run::load_settings(a.settings.as_deref())?;
    let steps = super::run::with_reads(&a.steps, &settings, None)?;
    let (isolation, work_root) = super::isolation(&steps, &a.state_dir, crate::NetworkMode::Isolated)?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}; choose another address with --listen", a.listen))?;
    let addr = listener.local_addr()?;
    let store = store::open(a.database_url.get(), &a.state_dir).await?;
    let config = server::Config {
        limits: server::listen::Limits {
            header_timeout: Duration::from_secs(a.header_timeout.max(1)),
            max_connections: a.max_connections.max(1),
            max_connections_per_ip: a.max_connections_per_ip.max(1),
        },
        max_streams: a.max_streams,
        max_streams_per_user: a.max_streams_per_user,
        max_pipeline_bytes: a.max_pipeline_bytes,
        max_plans_per_user: a.max_plans_per_user.max(1),
        lease: Duration::from_secs_f64(a.lease_seconds.clamp(0.2, 86_400.0 * 365.0)),
        state_dir: a.state_dir.clone(),
        max_body: a.max_body,
        request_timeout: Duration::from_secs(a.request_timeout),
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
        admin_password,
        no_local_executor: a.no_local_executor,
        loop_limits: engine::looping::Limits {
            iterations: a.max_iterations.max(1),
            nodes: a.max_nodes.max(1),
            stages_at_once: a.max_parallel_stages.max(1),
        },
        max_log_bytes: a.max_log_bytes.max(1024),
        isolation,
        work_root,
        url: Some(format!("http://{addr}")),
        settings,
    };
    let (app, bootstrap) = server::start(store, config).await.map_err(anyhow::Error::msg)?;
    println!("listening on http://{addr}");
    if let Some(token) = bootstrap {
        println!("bootstrap token for user `admin` (shown once; create a password or other tokens with it): {token}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server::serve(app, listener, shutdown_signal()).await?;
    eprintln!("server stopped");
    Ok(ExitCode::SUCCESS)
}
