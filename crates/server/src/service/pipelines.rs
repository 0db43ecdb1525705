//! Pipelines and the entities a project holds, as typed use cases with RBAC checked inside. Pipelines are
//! created and updated from YAML with full validation — errors carry line and column — and every change is a
//! new version, so executions keep the YAML they ran. Input sets, services, environments and infrastructure
//! definitions are YAML entity files; secrets are JSON, sealed at rest, and their values are write-only: no
//! view carries them.

use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::service::{project_scope, record};
use serde::{Deserialize, Serialize};
use spec::Entity;
use store::{Record, now_ms};

/// A pipeline as the API shows it.
#[derive(Debug, Serialize)]
pub struct PipelineView {
    /// Identifier.
    pub identifier: String,
    /// Organization.
    pub org: String,
    /// Project.
    pub project: String,
    /// Display name.
    pub name: String,
    /// The current version.
    pub version: i64,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
    /// The current YAML (one pipeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
    /// Validation warnings with line and column (after a save).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<serde_json::Value>>,
}

impl PipelineView {
    fn of(r: &Record) -> Self {
        PipelineView {
            identifier: r.identifier.clone(),
            org: r.org.clone(),
            project: r.project.clone(),
            name: r.body["name"].as_str().unwrap_or(&r.identifier).to_string(),
            version: r.body["version"].as_i64().unwrap_or(1),
            created_at: r.created_at,
            updated_at: r.updated_at,
            yaml: None,
            warnings: None,
        }
    }
}

/// One version of a pipeline.
#[derive(Debug, Serialize)]
pub struct PipelineVersion {
    /// Identifier.
    pub identifier: String,
    /// The version.
    pub version: i64,
    /// Its YAML.
    pub yaml: String,
}

/// An entity (input set, service, environment, infrastructure definition, secret) as the API shows it.
#[derive(Debug, Serialize)]
pub struct EntityView {
    /// Identifier.
    pub identifier: String,
    /// Organization.
    pub org: String,
    /// Project.
    pub project: String,
    /// Display name.
    pub name: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
    /// The YAML (never for secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
    /// A template's version marked stable, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
}

impl EntityView {
    fn of(r: &Record) -> Self {
        EntityView {
            identifier: r.identifier.clone(),
            org: r.org.clone(),
            project: r.project.clone(),
            name: r.body["name"].as_str().unwrap_or(&r.identifier).to_string(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            yaml: r.body["yaml"].as_str().map(String::from),
            stable: r.body["stable"].as_str().map(String::from),
        }
    }
}

/// A YAML document from the body: `application/yaml` (also `application/x-yaml`, `text/yaml`) or JSON
/// `{"yaml": "…"}`. Secrets are JSON objects, kept as such.
pub enum Upload {
    /// YAML text.
    Yaml(String),
    /// A JSON object (secrets).
    Json(serde_json::Value),
}

impl Upload {
    /// The YAML text (a JSON body must carry it as `yaml`).
    pub fn yaml(self) -> ApiResult<String> {
        match self {
            Upload::Yaml(y) => Ok(y),
            Upload::Json(_) => Err(ApiError::BadRequest("expected YAML, or JSON with a `yaml` string field".into())),
        }
    }
}

fn check_scope(
    meta_org: Option<&spec::Str>,
    meta_project: Option<&spec::Str>,
    scope: &Scope,
    what: &str,
) -> ApiResult<()> {
    let org = meta_org.map_or("default", |s| s.as_str());
    let project = meta_project.map_or("default", |s| s.as_str());
    if org != scope.org || project != scope.project {
        return Err(ApiError::BadRequest(format!(
            "the {what} says orgIdentifier `{org}` / projectIdentifier `{project}` but was sent to `{}/{}`; set `orgIdentifier: {}` and `projectIdentifier: {}`",
            scope.org, scope.project, scope.org, scope.project
        )));
    }
    Ok(())
}

async fn save_pipeline(
    app: &App,
    p: &Principal,
    scope: &Scope,
    yaml: String,
    expect: Option<&str>,
    create: bool,
) -> ApiResult<(bool, PipelineView)> {
    app.check_pipeline_size(&yaml)?;
    let lib = templates(app, scope).await?;
    let doc = launch::check_pipeline(spec::parse_document_with("pipeline.yaml", yaml, Some(&lib)))?;
    let Some(Entity::Pipeline(pl)) = &doc.entity else { return Err(ApiError::BadRequest("not a pipeline".into())) };
    check_scope(pl.org_identifier.as_ref(), pl.project_identifier.as_ref(), scope, "pipeline")?;
    let id = pl.identifier.value.clone();
    if let Some(e) = expect
        && e != id
    {
        return Err(ApiError::BadRequest(format!(
            "the YAML's identifier is `{id}`, the path names `{e}`; they must match"
        )));
    }
    let perm = Permission::PIPELINE_CREATE_EDIT;
    app.require(p, perm, &Resource::new("pipeline", &id, scope.clone())).await?;
    let existing = app.store.record("pipeline", &scope.org, &scope.project, &id).await?;
    if create && existing.is_some() {
        return Err(ApiError::Conflict(format!("pipeline `{id}` exists; PUT …/pipelines/{id} changes it")));
    }
    let version = app.store.save_pipeline(&scope.org, &scope.project, &id, &doc.source).await?;
    let mut r = record("pipeline", scope, &id, serde_json::json!({"name": pl.name.value, "version": version}));
    if let Some(e) = &existing {
        r.created_at = e.created_at;
    }
    app.store.put_record(&r, true).await?;
    let warnings: Vec<_> = doc
        .warnings()
        .map(|d| {
            let mut v = serde_json::to_value(d.to_json()).unwrap_or_default();
            v["severity"] = "warning".into();
            v
        })
        .collect();
    app.audit(
        &p.display(),
        &p.address,
        if existing.is_some() { "update" } else { "create" },
        "pipeline",
        &id,
        scope,
        serde_json::json!({"version": version}),
    )
    .await?;
    let mut v = PipelineView::of(&r);
    v.warnings = Some(warnings);
    Ok((existing.is_none(), v))
}

async fn pipeline_record(app: &App, p: &Principal, scope: &Scope, id: &str) -> ApiResult<store::Record> {
    identifier("pipeline", id)?;
    match app.store.record("pipeline", &scope.org, &scope.project, id).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, scope, format!("no pipeline `{id}` in {}", scope.describe())).await),
    }
}

/// The kinds of entities a project holds, by their path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EntityKind {
    /// `inputSet:` / `overlayInputSet:` files.
    InputSets,
    /// `service:` files.
    Services,
    /// `environment:` files.
    Environments,
    /// `infrastructureDefinition:` files.
    Infrastructures,
    /// Secrets (JSON `{identifier, name, value}`).
    Secrets,
    /// `template:` files; one record per template, holding every version.
    Templates,
}

impl EntityKind {
    /// The record kind.
    pub fn kind(self) -> &'static str {
        match self {
            EntityKind::InputSets => "input_set",
            EntityKind::Services => "service",
            EntityKind::Environments => "environment",
            EntityKind::Infrastructures => "infrastructure",
            EntityKind::Secrets => "secret",
            EntityKind::Templates => "template",
        }
    }

    /// The resource type permissions name (infrastructure definitions are environments').
    pub fn rtype(self) -> &'static str {
        match self {
            EntityKind::Infrastructures => "environment",
            other => other.kind(),
        }
    }

    /// Who may see records of this kind.
    pub fn view(self) -> Permission {
        match self {
            EntityKind::InputSets => Permission::INPUT_SET_VIEW,
            EntityKind::Services => Permission::SERVICE_VIEW,
            EntityKind::Environments | EntityKind::Infrastructures => Permission::ENVIRONMENT_VIEW,
            EntityKind::Secrets => Permission::SECRET_VIEW,
            EntityKind::Templates => Permission::TEMPLATE_VIEW,
        }
    }

    /// Who may create and change records of this kind.
    pub fn create_edit(self) -> Permission {
        match self {
            EntityKind::InputSets => Permission::INPUT_SET_CREATE_EDIT,
            EntityKind::Services => Permission::SERVICE_CREATE_EDIT,
            EntityKind::Environments | EntityKind::Infrastructures => Permission::ENVIRONMENT_CREATE_EDIT,
            EntityKind::Secrets => Permission::SECRET_CREATE_EDIT,
            EntityKind::Templates => Permission::TEMPLATE_CREATE_EDIT,
        }
    }

    /// Who may delete records of this kind.
    pub fn delete(self) -> Permission {
        match self {
            EntityKind::InputSets => Permission::INPUT_SET_DELETE,
            EntityKind::Services => Permission::SERVICE_DELETE,
            EntityKind::Environments | EntityKind::Infrastructures => Permission::ENVIRONMENT_DELETE,
            EntityKind::Secrets => Permission::SECRET_DELETE,
            EntityKind::Templates => Permission::TEMPLATE_DELETE,
        }
    }
}

async fn entity_body(
    app: &App,
    kind: EntityKind,
    scope: &Scope,
    body: Upload,
) -> ApiResult<(String, serde_json::Value)> {
    if let EntityKind::Secrets = kind {
        let Upload::Json(v) = body else {
            return Err(ApiError::UnsupportedMediaType(
                "secrets are JSON: {\"identifier\", \"name\", \"value\"}".into(),
            ));
        };
        let id = v["identifier"]
            .as_str()
            .ok_or_else(|| ApiError::BadRequest("a secret needs an `identifier` string".into()))?
            .to_string();
        let value =
            v["value"].as_str().ok_or_else(|| ApiError::BadRequest("a secret needs a `value` string".into()))?;
        identifier("secret", &id)?;
        let name = v["name"].as_str().unwrap_or(&id).to_string();
        // Sealed at rest; the value itself is never stored or returned.
        let sealed = app
            .keys
            .seal(&crate::secret_context(&scope.org, &scope.project, &id), value)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok((id, serde_json::json!({"name": name, "sealed": sealed})));
    }
    let yaml = body.yaml()?;
    app.check_pipeline_size(&yaml)?;
    // A template may use the project's other templates.
    let lib = if kind == EntityKind::Templates { Some(templates(app, scope).await?) } else { None };
    let doc = spec::parse_document_with(&format!("{}.yaml", kind.kind()), yaml, lib.as_ref());
    if !doc.is_valid() {
        return Err(launch::LaunchError::invalid(&doc).into());
    }
    if let (Some(Entity::Template(t)), EntityKind::Templates) = (&doc.entity, kind) {
        let field = |k: &str| doc.body().and_then(|b| b.get(k)).and_then(spec::Node::as_scalar);
        // A template's scope is where it is stored: its file must declare that scope, so that a project's
        // editor cannot publish a template at the account or an organization by leaving identifiers out.
        let declared = (field("orgIdentifier"), field("projectIdentifier"));
        let wanted = (
            (!scope.org.is_empty()).then_some(scope.org.as_str()),
            (!scope.project.is_empty()).then_some(scope.project.as_str()),
        );
        if declared != wanted {
            let says = |d: (Option<&str>, Option<&str>)| match d {
                (_, Some(p)) => format!("project `{p}` (orgIdentifier `{}`)", d.0.unwrap_or("")),
                (Some(o), None) => format!("organization `{o}`"),
                (None, None) => "the account (no orgIdentifier / projectIdentifier)".to_string(),
            };
            return Err(ApiError::BadRequest(format!(
                "template `{}` declares {}, but was sent to {}; a template is stored at the scope it declares, through that scope's templates route, by someone who may edit templates there",
                t.identifier,
                says(declared),
                says(wanted),
            )));
        }
        return Ok((
            t.identifier.clone(),
            serde_json::json!({"name": t.name, "version": t.version, "yaml": doc.source}),
        ));
    }
    let meta = match (&doc.entity, kind) {
        (Some(Entity::InputSet(s)), EntityKind::InputSets) => &s.meta,
        (Some(Entity::OverlayInputSet(s)), EntityKind::InputSets) => &s.meta,
        (Some(Entity::Service(s)), EntityKind::Services) => &s.meta,
        (Some(Entity::Environment(s)), EntityKind::Environments) => &s.meta,
        (Some(Entity::Infrastructure(s)), EntityKind::Infrastructures) => &s.meta,
        (other, _) => {
            return Err(ApiError::BadRequest(format!(
                "expected a {} file, found a {}",
                kind.kind(),
                other.as_ref().map_or("?", Entity::kind)
            )));
        }
    };
    if meta.org_identifier.is_some() || meta.project_identifier.is_some() {
        check_scope(meta.org_identifier.as_ref(), meta.project_identifier.as_ref(), scope, kind.kind())?;
    }
    Ok((meta.identifier.value.clone(), serde_json::json!({"name": meta.name.value, "yaml": doc.source})))
}

/// A template record with version `b` added to (or replacing it in) the versions `old` holds; the record's
/// `yaml` is its newest version.
fn with_version(mut r: store::Record, old: Option<&store::Record>, b: &serde_json::Value) -> store::Record {
    let mut versions = old.and_then(|o| o.body["versions"].as_object().cloned()).unwrap_or_default();
    versions.insert(b["version"].as_str().unwrap_or_default().to_string(), b["yaml"].clone());
    let newest = versions.keys().max_by(|a, b| spec::template::natural(a, b)).cloned().unwrap_or_default();
    if let Some(o) = old {
        r.created_at = o.created_at;
    }
    r.body = serde_json::json!({
        "name": b["name"], "yaml": versions[&newest], "versions": versions,
    });
    // The stable mark stays on the version it was given to.
    if let Some(stable) = old.and_then(|o| o.body.get("stable")).filter(|s| s.is_string()) {
        r.body["stable"] = stable.clone();
    }
    r
}

/// The templates a pipeline of `scope` may use: the project's own, its organization's and the account's (by the
/// scope each is stored in), every stored version.
pub async fn templates(app: &App, scope: &Scope) -> ApiResult<spec::template::Library> {
    let mut lib = spec::template::Library::default();
    for r in app.store.records("template", None, None).await? {
        for (version, yaml) in r.body["versions"].as_object().into_iter().flatten() {
            let Some(yaml) = yaml.as_str() else { continue };
            // Read once; a template of another project (or organization) is dropped again.
            let before = lib.templates.len();
            lib.add(
                &format!("template {}@{version} (stored in {}/{})", r.identifier, r.org, r.project),
                yaml.to_string(),
            );
            // Its scope is the scope it is stored in, never what its YAML declares (a record stored before
            // templates had to declare their project keeps to that project).
            let stored = match (r.org.is_empty(), r.project.is_empty()) {
                (true, _) => spec::template::Scope::Account,
                (false, true) => spec::template::Scope::Org,
                (false, false) => spec::template::Scope::Project,
            };
            let visible = match stored {
                spec::template::Scope::Project => r.org == scope.org && r.project == scope.project,
                spec::template::Scope::Org => r.org == scope.org,
                spec::template::Scope::Account => true,
            };
            match lib.templates.get_mut(before) {
                Some(t) if visible => {
                    t.scope = stored;
                    t.stable = r.body["stable"].as_str() == Some(version.as_str());
                }
                _ => lib.templates.truncate(before),
            }
        }
    }
    Ok(lib)
}

async fn entity_record(
    app: &App,
    p: &Principal,
    scope: &Scope,
    kind: EntityKind,
    id: &str,
) -> ApiResult<store::Record> {
    identifier(kind.kind(), id)?;
    match app.store.record(kind.kind(), &scope.org, &scope.project, id).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, scope, format!("no {} `{id}` in {}", kind.kind(), scope.describe())).await),
    }
}

/// A project's pipelines the caller may view.
pub async fn list_pipelines(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<Vec<PipelineView>> {
    let scope = project_scope(app, p, org, project).await?;
    app.require_some(p, Permission::PIPELINE_VIEW, "pipeline", &scope).await?;
    let policy = app.policy().await?;
    Ok(app
        .store
        .records("pipeline", Some(org), Some(project))
        .await?
        .iter()
        .filter(|r| {
            policy.allows(&p.who, Permission::PIPELINE_VIEW, &Resource::new("pipeline", &r.identifier, scope.clone()))
        })
        .map(PipelineView::of)
        .collect())
}

/// Create a pipeline from YAML.
pub async fn create_pipeline(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    yaml: String,
) -> ApiResult<PipelineView> {
    let scope = project_scope(app, p, org, project).await?;
    app.require_some(p, Permission::PIPELINE_CREATE_EDIT, "pipeline", &scope).await?;
    Ok(save_pipeline(app, p, &scope, yaml, None, true).await?.1)
}

/// One pipeline with its current YAML.
pub async fn get_pipeline(app: &App, p: &Principal, org: &str, project: &str, id: &str) -> ApiResult<PipelineView> {
    let scope = project_scope(app, p, org, project).await?;
    let r = pipeline_record(app, p, &scope, id).await?;
    app.require(p, Permission::PIPELINE_VIEW, &Resource::new("pipeline", id, scope.clone())).await?;
    let mut v = PipelineView::of(&r);
    v.yaml = Some(app.store.pipeline_yaml(org, project, id, v.version).await?);
    Ok(v)
}

/// Create or change a pipeline from YAML (a new version); true when it was created.
pub async fn put_pipeline(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    id: &str,
    yaml: String,
) -> ApiResult<(bool, PipelineView)> {
    let scope = project_scope(app, p, org, project).await?;
    identifier("pipeline", id)?;
    app.require(p, Permission::PIPELINE_CREATE_EDIT, &Resource::new("pipeline", id, scope.clone())).await?;
    save_pipeline(app, p, &scope, yaml, Some(id), false).await
}

/// Delete a pipeline (its executions stay in the history).
pub async fn delete_pipeline(app: &App, p: &Principal, org: &str, project: &str, id: &str) -> ApiResult<()> {
    let scope = project_scope(app, p, org, project).await?;
    pipeline_record(app, p, &scope, id).await?;
    app.require(p, Permission::PIPELINE_DELETE, &Resource::new("pipeline", id, scope.clone())).await?;
    app.store.delete_record("pipeline", org, project, id).await?;
    app.audit(&p.display(), &p.address, "delete", "pipeline", id, &scope, serde_json::json!({})).await
}

/// The YAML of one version of a pipeline (what an execution ran).
pub async fn pipeline_version(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    id: &str,
    version: i64,
) -> ApiResult<PipelineVersion> {
    let scope = project_scope(app, p, org, project).await?;
    identifier("pipeline", id)?;
    app.require(p, Permission::PIPELINE_VIEW, &Resource::new("pipeline", id, scope.clone())).await?;
    let yaml = app.store.pipeline_yaml(org, project, id, version).await?;
    Ok(PipelineVersion { identifier: id.to_string(), version, yaml })
}

/// A project's entities of a kind that the caller may view (secrets without values).
pub async fn list_entities(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    kind: EntityKind,
) -> ApiResult<Vec<EntityView>> {
    let scope = project_scope(app, p, org, project).await?;
    let perm = kind.view();
    app.require_some(p, perm, kind.rtype(), &scope).await?;
    let policy = app.policy().await?;
    Ok(app
        .store
        .records(kind.kind(), Some(org), Some(project))
        .await?
        .iter()
        .filter(|r| policy.allows(&p.who, perm, &Resource::new(kind.rtype(), &r.identifier, scope.clone())))
        .map(EntityView::of)
        .collect())
}

/// Create an entity (YAML; secrets as JSON).
pub async fn create_entity(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    kind: EntityKind,
    body: Upload,
) -> ApiResult<EntityView> {
    create_in(app, p, &project_scope(app, p, org, project).await?, kind, body).await
}

/// Create an entity in `scope` (a project's; the account's or an organization's for templates).
async fn create_in(app: &App, p: &Principal, scope: &Scope, kind: EntityKind, body: Upload) -> ApiResult<EntityView> {
    let (scope, org, project) = (scope.clone(), scope.org.as_str(), scope.project.as_str());
    app.require_some(p, kind.create_edit(), kind.rtype(), &scope).await?;
    let (id, b) = entity_body(app, kind, &scope, body).await?;
    app.require(p, kind.create_edit(), &Resource::new(kind.rtype(), &id, scope.clone())).await?;
    if kind == EntityKind::Templates {
        // A template's versions live in one record: a new version is added, an existing one is a conflict.
        let old = app.store.record(kind.kind(), org, project, &id).await?;
        let version = b["version"].as_str().unwrap_or_default().to_string();
        if old.as_ref().is_some_and(|o| o.body["versions"].get(&version).is_some()) {
            return Err(ApiError::Conflict(format!(
                "version `{version}` of template `{id}` exists in {}; PUT …/templates/{id} replaces it",
                scope.describe()
            )));
        }
        let r = with_version(record(kind.kind(), &scope, &id, serde_json::json!({})), old.as_ref(), &b);
        app.store.put_record(&r, true).await?;
        app.audit(
            &p.display(),
            &p.address,
            "create",
            kind.kind(),
            &id,
            &scope,
            serde_json::json!({"version": version}),
        )
        .await?;
        return Ok(EntityView::of(&r));
    }
    let r = record(kind.kind(), &scope, &id, b);
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("{} `{id}` exists in {}", kind.kind(), scope.describe())));
    }
    app.audit(&p.display(), &p.address, "create", kind.kind(), &id, &scope, serde_json::json!({})).await?;
    Ok(EntityView::of(&r))
}

/// One entity (a secret without its value).
pub async fn get_entity(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    kind: EntityKind,
    id: &str,
) -> ApiResult<EntityView> {
    get_in(app, p, &project_scope(app, p, org, project).await?, kind, id).await
}

async fn get_in(app: &App, p: &Principal, scope: &Scope, kind: EntityKind, id: &str) -> ApiResult<EntityView> {
    let r = entity_record(app, p, scope, kind, id).await?;
    app.require(p, kind.view(), &Resource::new(kind.rtype(), id, scope.clone())).await?;
    Ok(EntityView::of(&r))
}

/// Create or replace an entity.
pub async fn put_entity(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    kind: EntityKind,
    id: &str,
    body: Upload,
) -> ApiResult<EntityView> {
    put_in(app, p, &project_scope(app, p, org, project).await?, kind, id, body).await
}

async fn put_in(
    app: &App,
    p: &Principal,
    scope: &Scope,
    kind: EntityKind,
    id: &str,
    body: Upload,
) -> ApiResult<EntityView> {
    let (scope, org, project) = (scope.clone(), scope.org.as_str(), scope.project.as_str());
    identifier(kind.kind(), id)?;
    app.require(p, kind.create_edit(), &Resource::new(kind.rtype(), id, scope.clone())).await?;
    let (got, b) = entity_body(app, kind, &scope, body).await?;
    if got != id {
        return Err(ApiError::BadRequest(format!(
            "the body's identifier is `{got}`, the path names `{id}`; they must match"
        )));
    }
    let old = app.store.record(kind.kind(), org, project, id).await?;
    let mut r = match kind {
        EntityKind::Templates => with_version(record(kind.kind(), &scope, id, serde_json::json!({})), old.as_ref(), &b),
        _ => record(kind.kind(), &scope, id, b),
    };
    if let Some(old) = &old {
        r.created_at = old.created_at;
    }
    r.updated_at = now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", kind.kind(), id, &scope, serde_json::json!({})).await?;
    Ok(EntityView::of(&r))
}

/// Delete an entity.
pub async fn delete_entity(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    kind: EntityKind,
    id: &str,
) -> ApiResult<()> {
    delete_in(app, p, &project_scope(app, p, org, project).await?, kind, id).await
}

async fn delete_in(app: &App, p: &Principal, scope: &Scope, kind: EntityKind, id: &str) -> ApiResult<()> {
    entity_record(app, p, scope, kind, id).await?;
    app.require(p, kind.delete(), &Resource::new(kind.rtype(), id, scope.clone())).await?;
    app.store.delete_record(kind.kind(), &scope.org, &scope.project, id).await?;
    app.audit(&p.display(), &p.address, "delete", kind.kind(), id, scope, serde_json::json!({})).await
}

/// The scope of the account's templates (no organization) or an organization's, which must exist.
async fn shared_scope(app: &App, p: &Principal, org: Option<&str>) -> ApiResult<Scope> {
    super::scope_named(app, p, org.unwrap_or_default(), "").await
}

/// Publish a version of a template at the account (`org` none) or in an organization: needs
/// `template:create_edit` there, whatever the caller may do in any project.
pub async fn create_shared_template(
    app: &App,
    p: &Principal,
    org: Option<&str>,
    body: Upload,
) -> ApiResult<EntityView> {
    create_in(app, p, &shared_scope(app, p, org).await?, EntityKind::Templates, body).await
}

/// A template of the account or an organization.
pub async fn get_shared_template(app: &App, p: &Principal, org: Option<&str>, id: &str) -> ApiResult<EntityView> {
    get_in(app, p, &shared_scope(app, p, org).await?, EntityKind::Templates, id).await
}

/// Add or replace a version of a template of the account or an organization.
pub async fn put_shared_template(
    app: &App,
    p: &Principal,
    org: Option<&str>,
    id: &str,
    body: Upload,
) -> ApiResult<EntityView> {
    put_in(app, p, &shared_scope(app, p, org).await?, EntityKind::Templates, id, body).await
}

/// Mark a version of a template of the account or an organization stable (`template:create_edit` there):
/// a reference to it without `versionLabel` uses that version from now on.
pub async fn mark_stable(
    app: &App,
    p: &Principal,
    org: Option<&str>,
    id: &str,
    version: &str,
) -> ApiResult<EntityView> {
    let scope = shared_scope(app, p, org).await?;
    let mut r = entity_record(app, p, &scope, EntityKind::Templates, id).await?;
    app.require(p, Permission::TEMPLATE_CREATE_EDIT, &Resource::new("template", id, scope.clone())).await?;
    if r.body["versions"].get(version).is_none() {
        let have: Vec<&str> = r.body["versions"].as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
        return Err(ApiError::NotFound(format!(
            "template `{id}` in {} has no version `{version}`; it has {}",
            scope.describe(),
            have.join(", ")
        )));
    }
    r.body["stable"] = version.into();
    r.updated_at = store::now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "mark_stable", "template", id, &scope, serde_json::json!({"version": version}))
        .await?;
    Ok(EntityView::of(&r))
}

/// Delete a template of the account or an organization.
pub async fn delete_shared_template(app: &App, p: &Principal, org: Option<&str>, id: &str) -> ApiResult<()> {
    delete_in(app, p, &shared_scope(app, p, org).await?, EntityKind::Templates, id).await
}
