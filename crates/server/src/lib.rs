//! `pipewright serve`: the REST API over the same store and engine the CLI uses. This file owns the shared
//! application state ([`App`]), the router (every route registered through utoipa so the OpenAPI document at
//! `/api/v1/openapi.json` is generated from the code and lists exactly the routes served), the HTTP layers
//! (tracing, compression, timeouts, body limits, metrics), start-up (migrations, bootstrap admin, taking over
//! executions whose process died) and graceful shutdown.

mod api;
pub mod auth;
pub mod contract;
pub mod crypto;
pub mod error;
pub mod listen;
pub mod rbac;
mod runner;
pub mod service;
pub mod web;

use crate::error::ApiResult;
use crate::rbac::{Binding, Policy, PrincipalRef, ResourceGroup, Role, Scope};
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{AuditEvent, Record, Store, now_ms};
use tokio::sync::RwLock;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use runner::Runner;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the working directories live.
    pub state_dir: PathBuf,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Longest a request may take (streams excepted).
    pub request_timeout: Duration,
    /// How long running executions get to finish at shutdown before they are aborted.
    pub shutdown_grace: Duration,
    /// The admin's password, when given; otherwise a bootstrap token is printed at first start.
    pub admin_password: Option<String>,
    /// How step processes are confined.
    pub isolation: engine::sandbox::Isolation,
    /// Where execution workspaces live.
    pub work_root: PathBuf,
    /// Connection bounds (request-head deadline, open connections in total and per address).
    pub limits: listen::Limits,
    /// Live-log streams open at once, in total.
    pub max_streams: usize,
    /// Live-log streams open at once per principal.
    pub max_streams_per_user: usize,
    /// Largest pipeline YAML accepted (saved or planned), bytes.
    pub max_pipeline_bytes: usize,
    /// Plans (plan, execute, re-run, retry) one principal may have in progress at once.
    pub max_plans_per_user: usize,
    /// How long this server's hold on an execution lasts without a heartbeat; executions whose owner's lease
    /// ran out are taken over.
    pub lease: Duration,
    /// The address the web UI is reached at (`<+pipeline.executionUrl>` is `URL/executions/ID`).
    pub url: Option<String>,
    /// Step handlers for the step types pipewright does not run itself (`serve --settings FILE`).
    pub settings: spec::Settings,
    /// Run no steps here: every step is a task for remote agents (`serve --no-local-executor`).
    pub no_local_executor: bool,
    /// How far looping strategies may expand (iterations per node, nodes per execution).
    pub loop_limits: engine::looping::Limits,
    /// The bytes of log one execution may store (`serve --max-log-bytes`).
    pub max_log_bytes: u64,
}

impl Config {
    /// Defaults for a state directory: 16 MiB bodies, 60 s requests, 30 s shutdown grace, no isolation
    /// (the CLI sets what `--step-isolation` asks), workspaces in `<state-dir>/work`.
    pub fn new(state_dir: PathBuf) -> Config {
        Config {
            work_root: state_dir.join("work"),
            state_dir,
            max_body: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            admin_password: None,
            isolation: engine::sandbox::Isolation::None,
            limits: listen::Limits {
                header_timeout: Duration::from_secs(10),
                max_connections: 4096,
                max_connections_per_ip: 256,
            },
            max_streams: 1000,
            max_streams_per_user: 20,
            max_pipeline_bytes: 4 * 1024 * 1024,
            max_plans_per_user: 2,
            lease: engine::owner::lease_from_env(),
            url: None,
            settings: spec::Settings::default(),
            no_local_executor: false,
            loop_limits: engine::looping::Limits::default(),
            max_log_bytes: engine::MAX_LOG_BYTES,
        }
    }
}

/// Shared state of a running server.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Configuration.
    pub config: Config,
    /// Background executions.
    pub runner: Arc<Runner>,
    policy: RwLock<Option<(Instant, Arc<Policy>)>>,
    /// Recently used tokens.
    pub tokens: auth::TokenCache,
    /// The keys that seal secret values (and tasks queued for agents) at rest.
    pub keys: Arc<crypto::Keyring>,
    /// When this server last recorded each agent as seen (a busy agent's record is not rewritten on every
    /// claim).
    pub agents_seen: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Live-log streams open, per principal and in total.
    pub streams: Arc<listen::Slots<String>>,
    /// Plans in progress per principal.
    pub plans: Arc<listen::Slots<String>>,
    /// Plans run at once (they are CPU work): one per core.
    plan_cpu: tokio::sync::Semaphore,
    metrics: Option<PrometheusHandle>,
}

/// How long a loaded policy is trusted before it is read again (writes through this server invalidate it at
/// once; the lifetime bounds how long another server's change takes to apply).
const POLICY_TTL: Duration = Duration::from_millis(900);

impl App {
    /// The roles, resource groups and bindings in force.
    pub async fn policy(&self) -> ApiResult<Arc<Policy>> {
        if let Some((at, p)) = self.policy.read().await.as_ref()
            && at.elapsed() < POLICY_TTL
        {
            return Ok(p.clone());
        }
        let mut policy = Policy::default();
        for r in self.store.records("role", None, None).await? {
            if let Ok(role) = serde_json::from_value::<Role>(r.body.clone()) {
                policy.roles.push((Scope { org: r.org, project: r.project }, role));
            }
        }
        for r in self.store.records("resource_group", None, None).await? {
            if let Ok(g) = serde_json::from_value::<ResourceGroup>(r.body.clone()) {
                policy.groups.push((Scope { org: r.org, project: r.project }, g));
            }
        }
        for r in self.store.records("role_binding", None, None).await? {
            if let Ok(b) = serde_json::from_value::<Binding>(r.body.clone()) {
                policy.bindings.push(b);
            }
        }
        let p = Arc::new(policy);
        *self.policy.write().await = Some((Instant::now(), p.clone()));
        Ok(p)
    }

    /// Admission for a plan (plan, run, re-run, retry): at most `--max-plans-per-user` in progress per
    /// principal (429 beyond), and one per core at a time (the rest wait their turn).
    pub async fn planning(
        &self,
        p: &auth::Principal,
    ) -> ApiResult<(listen::Slot<String>, tokio::sync::SemaphorePermit<'_>)> {
        let slot = self.plans.take(p.display()).ok_or_else(|| {
            error::ApiError::TooManyRequests(format!(
                "you have {} plans in progress already; wait for them to finish",
                self.config.max_plans_per_user
            ))
        })?;
        let cpu = self.plan_cpu.acquire().await.map_err(|e| error::ApiError::Internal(e.to_string()))?;
        Ok((slot, cpu))
    }

    /// Refuse a pipeline larger than `--max-pipeline-bytes` (413).
    pub fn check_pipeline_size(&self, yaml: &str) -> ApiResult<()> {
        if yaml.len() > self.config.max_pipeline_bytes {
            return Err(error::ApiError::TooLarge(format!(
                "the YAML is {} bytes; this server accepts at most {} (--max-pipeline-bytes)",
                yaml.len(),
                self.config.max_pipeline_bytes
            )));
        }
        Ok(())
    }

    /// Forget the cached policy (after a change to roles, groups or bindings).
    pub async fn policy_changed(&self) {
        *self.policy.write().await = None;
    }

    /// Record an audited action.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        who: &str,
        address: &str,
        action: &str,
        resource_type: &str,
        resource: &str,
        scope: &Scope,
        detail: serde_json::Value,
    ) -> ApiResult<()> {
        self.store
            .audit(&AuditEvent {
                id: 0,
                at: now_ms(),
                principal: who.to_string(),
                action: action.into(),
                resource_type: resource_type.into(),
                resource: resource.into(),
                org: scope.org.clone(),
                project: scope.project.clone(),
                address: address.into(),
                detail,
            })
            .await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pipewright", description = "Harness-style pipelines: run, select stages, re-run, retry — with RBAC."),
    components(schemas(rbac::Scope, rbac::Role, rbac::ResourceGroup, rbac::ResourceFilter, rbac::PrincipalRef, rbac::Binding, error::ErrorBody, api::EntityKind)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// Headers on every answer: no page of this server may be framed by another site, run scripts or load
/// anything from elsewhere, have its content type guessed, or send its address to another site.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// The router and the OpenAPI document it was built with.
pub fn router(app: Arc<App>) -> (Router, utoipa::openapi::OpenApi) {
    let (api, mut doc) = api::routes(OpenApiRouter::with_openapi(ApiDoc::openapi())).split_for_parts();
    // Applied to the whole document, once the routes are in it.
    utoipa::Modify::modify(&contract::Contract, &mut doc);
    let doc_json = Arc::new(doc.clone());
    let mut router = api
        .route("/api/v1/openapi.json", axum::routing::get(move || async move { axum::Json((*doc_json).clone()) }))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_text))
        .merge(web::routes(app.clone()))
        .with_state(app.clone());
    router = router
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn(track_http))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            app.config.request_timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(app.config.max_body))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    (router, doc)
}

async fn readyz(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    use axum::response::IntoResponse;
    match app.store.records("org", None, None).await {
        Ok(_) if !app.runner.stopping() => "ready".into_response(),
        Ok(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response(),
        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics_text(axum::extract::State(app): axum::extract::State<Arc<App>>) -> String {
    app.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
}

/// Time every request; the route template (not the concrete path) labels it.
async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Labels come from fixed sets, whatever a client sends: made-up methods are `other`.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    metrics::histogram!("pipewright_http_request_duration_seconds", "method" => method, "route" => route,
        "status" => resp.status().as_u16().to_string())
    .record(start.elapsed().as_secs_f64());
    resp
}

fn install_metrics() -> Option<PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    metrics::describe_counter!("pipewright_executions_started_total", "Executions started by this server");
    metrics::describe_counter!("pipewright_executions_finished_total", "Executions ended, by status");
    metrics::describe_histogram!("pipewright_step_duration_seconds", "Step durations");
    metrics::describe_gauge!("pipewright_queue_depth", "Executions queued or running on this server");
    metrics::describe_histogram!("pipewright_http_request_duration_seconds", "HTTP request durations");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

/// Build the application: make sure an admin exists, take over executions whose process died (now and
/// whenever a lease runs out).
pub async fn start(store: Arc<dyn Store>, config: Config) -> Result<(Arc<App>, Option<String>), String> {
    let keys = Arc::new(crypto::Keyring::load(&config.state_dir).map_err(|e| e.to_string())?);
    check_key(store.as_ref(), &keys, false).await?;
    // Without a local executor every step is a task for the agents.
    let executor: Option<Arc<dyn engine::executor::Executor>> = if config.no_local_executor {
        Some(Arc::new(service::agents::RemoteExecutor::new(store.clone(), keys.clone())))
    } else {
        None
    };
    let sealed = seal_plain_secrets(store.as_ref(), &keys).await.map_err(|e| e.to_string())?;
    if sealed > 0 {
        tracing::info!("sealed {sealed} secret value(s) stored in clear by an earlier version");
    }
    let streams = listen::Slots::new(config.max_streams_per_user, config.max_streams);
    let plans = listen::Slots::new(config.max_plans_per_user, usize::MAX);
    let app = Arc::new(App {
        store: store.clone(),
        runner: Arc::new(
            Runner::new(
                store.clone(),
                config.state_dir.clone(),
                config.isolation.clone(),
                config.work_root.clone(),
                config.lease,
                config.url.clone(),
                config.settings.clone(),
            )
            .with_executor(executor)
            .with_loop_limits(config.loop_limits)
            .with_max_log_bytes(config.max_log_bytes),
        ),
        config,
        policy: RwLock::new(None),
        tokens: auth::TokenCache::default(),
        keys,
        agents_seen: Default::default(),
        streams,
        plans,
        plan_cpu: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        metrics: install_metrics(),
    });
    let bootstrap = bootstrap(&app).await.map_err(|e| e.to_string())?;
    bind_legacy_tokens(app.store.as_ref()).await.map_err(|e| e.to_string())?;
    // Executions a process that died left unfinished are taken over at start, then whenever a lease runs out.
    service::executions::take_over(&app).await.map_err(|e| e.to_string())?;
    let scanner = app.clone();
    tokio::spawn(async move {
        let every = scanner.runner.lease() / 2;
        while !scanner.runner.stopping() {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = scanner.runner.stopped() => break,
            }
            if let Err(e) = service::executions::take_over(&scanner).await {
                tracing::error!("taking over unfinished executions failed: {e}");
            }
            // Tasks whose agent stopped renewing its lease: started ones are lost (their steps get new
            // attempts), unconfirmed ones go back to the queue.
            match scanner.store.expire_tasks(now_ms()).await {
                Ok(expired) => {
                    for t in expired.into_iter().filter(|t| t.state == store::TaskState::Lost) {
                        tracing::warn!(
                            "agent `{}` lost task {} of execution {}; the step runs again",
                            t.agent.unwrap_or_default(),
                            t.id,
                            t.execution_id
                        );
                    }
                }
                Err(e) => tracing::error!("expiring agents' tasks failed: {e}"),
            }
        }
    });
    Ok((app, bootstrap))
}

/// The additional data a secret's value is sealed with: the record it belongs to.
pub fn secret_context(org: &str, project: &str, id: &str) -> String {
    format!("secret/{org}/{project}/{id}")
}

/// Seal secret values an earlier version stored in clear; returns how many.
async fn seal_plain_secrets(store: &dyn Store, keys: &crypto::Keyring) -> Result<usize, String> {
    let mut n = 0;
    for mut r in store.records("secret", None, None).await.map_err(|e| e.to_string())? {
        let Some(plain) = r.body.get("value").and_then(|v| v.as_str()).map(String::from) else { continue };
        let sealed =
            keys.seal(&secret_context(&r.org, &r.project, &r.identifier), &plain).map_err(|e| e.to_string())?;
        if let Some(o) = r.body.as_object_mut() {
            o.remove("value");
            o.insert("sealed".into(), sealed.into());
        }
        store.put_record(&r, true).await.map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// Seal every stored secret value again under a new key, then drop the old keys (`pipewright secret
/// rotate-key`). Returns how many values were sealed again and, for a key given in `PIPEWRIGHT_SECRET_KEY`,
/// the new key to set there.
pub async fn rotate_secret_key(
    store: &dyn Store,
    state_dir: &std::path::Path,
) -> Result<(usize, Option<String>), String> {
    let keys = crypto::Keyring::load(state_dir).map_err(|e| e.to_string())?;
    seal_plain_secrets(store, &keys).await?;
    let new_key = keys.begin_rotation().map_err(|e| e.to_string())?;
    let mut n = 0;
    for mut r in store.records("secret", None, None).await.map_err(|e| e.to_string())? {
        let Some(old) = r.body.get("sealed").and_then(|v| v.as_str()).map(String::from) else { continue };
        let ctx = secret_context(&r.org, &r.project, &r.identifier);
        let plain = keys.open(&ctx, &old).map_err(|e| format!("secret `{}`: {e}", r.identifier))?;
        r.body["sealed"] = keys.seal(&ctx, &plain).map_err(|e| e.to_string())?.into();
        store.put_record(&r, true).await.map_err(|e| e.to_string())?;
        n += 1;
    }
    check_key(store, &keys, true).await?;
    keys.finish_rotation().map_err(|e| e.to_string())?;
    Ok((n, (keys.source() == &crypto::KeySource::Env).then_some(new_key)))
}

/// The record holding a value sealed under the secret key: servers sharing a database must share the key,
/// and one started with another key refuses to start rather than fail to open every secret later.
const KEY_CHECK: (&str, &str) = ("keyring", "check");

/// Check that `keys` opens the database's key check (writing it when there is none, or `reseal` after a
/// rotation).
async fn check_key(store: &dyn Store, keys: &crypto::Keyring, reseal: bool) -> Result<(), String> {
    let (kind, id) = KEY_CHECK;
    let fresh = || -> Result<Record, String> {
        let now = now_ms();
        let sealed = keys.seal("keyring/check", "pipewright").map_err(|e| e.to_string())?;
        Ok(Record {
            kind: kind.into(),
            org: String::new(),
            project: String::new(),
            identifier: id.into(),
            body: serde_json::json!({ "sealed": sealed }),
            created_at: now,
            updated_at: now,
        })
    };
    if reseal {
        return store.put_record(&fresh()?, true).await.map(|_| ()).map_err(|e| e.to_string());
    }
    store.put_record(&fresh()?, false).await.map_err(|e| e.to_string())?;
    let stored = store.record(kind, "", "", id).await.map_err(|e| e.to_string())?;
    let sealed = stored.as_ref().and_then(|r| r.body.get("sealed")).and_then(|v| v.as_str()).unwrap_or_default();
    match keys.open("keyring/check", sealed) {
        Ok(v) if v == "pipewright" => Ok(()),
        _ => Err(format!(
            "the secrets in this store are sealed under another key than this server's ({}); servers that share a \
             database must share the key: set the same {} on each, or start them on one state directory",
            keys.source().describe(),
            crypto::KEY_ENV
        )),
    }
}

/// First start: the `admin` user with Account Admin on everything, and the `default` organization and project.
/// Returns a one-time bootstrap token when no password was given.
async fn bootstrap(app: &App) -> ApiResult<Option<String>> {
    let now = now_ms();
    let record = |kind: &str, org: &str, project: &str, id: &str, body: serde_json::Value| Record {
        kind: kind.into(),
        org: org.into(),
        project: project.into(),
        identifier: id.into(),
        body,
        created_at: now,
        updated_at: now,
    };
    app.store.put_record(&record("org", "", "", "default", serde_json::json!({"name": "Default"})), false).await?;
    app.store
        .put_record(&record("project", "default", "", "default", serde_json::json!({"name": "Default Project"})), false)
        .await?;
    if let Some(pw) = &app.config.admin_password {
        auth::check_password(pw, &["admin"]).map_err(|e| {
            crate::error::ApiError::BadRequest(format!("the admin password (--admin-password-file): {e}"))
        })?;
    }
    if let Some(mut admin) = app.store.record("user", "", "", "admin").await? {
        // A password given at a later start resets the admin's password.
        if let Some(pw) = &app.config.admin_password {
            admin.body["password_hash"] = auth::hash_password(pw)?.into();
            admin.updated_at = now;
            app.store.put_record(&admin, true).await?;
            // The bootstrap token works until the admin has a password.
            for t in app.store.tokens(Some(("user", "admin"))).await? {
                if t.name == auth::BOOTSTRAP && t.revoked_at.is_none() {
                    app.store.revoke_token(&t.id).await?;
                }
            }
        }
        return Ok(None);
    }
    let mut body = serde_json::json!({"uid": ulid::Ulid::new().to_string(), "email": null});
    if let Some(pw) = &app.config.admin_password {
        body["password_hash"] = auth::hash_password(pw)?.into();
    }
    app.store.put_record(&record("user", "", "", "admin", body), false).await?;
    let binding = Binding {
        identifier: "admin_account_admin".into(),
        scope: Scope::account(),
        principal: PrincipalRef { kind: "user".into(), id: "admin".into() },
        role: "_account_admin".into(),
        resource_group: "_all_resources_including_child_scopes".into(),
    };
    app.store
        .put_record(
            &record("role_binding", "", "", &binding.identifier, serde_json::to_value(&binding).unwrap_or_default()),
            false,
        )
        .await?;
    app.audit("system", "local", "bootstrap", "user", "admin", &Scope::account(), serde_json::json!({})).await?;
    if app.config.admin_password.is_some() {
        return Ok(None);
    }
    // One-time: it is revoked when the admin creates a token with it or gets a password, and expires in an hour.
    let (_, secret) = auth::issue_token(
        app.store.as_ref(),
        auth::BOOTSTRAP,
        &PrincipalRef { kind: "user".into(), id: "admin".into() },
        &Scope::account(),
        Some(now + 3600 * 1000),
    )
    .await?;
    Ok(Some(secret))
}

/// Bind tokens issued by an earlier version to their principal's internal id; revoke those whose principal
/// is gone.
async fn bind_legacy_tokens(store: &dyn Store) -> ApiResult<()> {
    for t in store.tokens(None).await? {
        if t.principal_uid.is_some() || t.revoked_at.is_some() {
            continue;
        }
        let who = PrincipalRef { kind: t.principal_kind.clone(), id: t.principal_id.clone() };
        let scope = Scope { org: t.principal_org.clone(), project: t.principal_project.clone() };
        match auth::principal_uid(store, &who, &scope).await? {
            Some(uid) => store.bind_token(&t.id, &uid).await?,
            None => {
                store.revoke_token(&t.id).await?;
            }
        }
    }
    Ok(())
}

/// Serve until `shutdown` resolves, then let running executions finish (up to the grace period; the rest are
/// aborted and recorded as such).
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(app.clone());
    let runner_app = app.clone();
    let stop = async move {
        shutdown.await;
        runner_app.runner.begin_stop();
    };
    listen::serve(listener, router, app.config.limits, stop).await?;
    app.runner.finish(app.config.shutdown_grace).await;
    Ok(())
}
