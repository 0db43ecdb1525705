//! Everything between "a pipeline and a request" and "an execution record the engine can run", shared by the
//! CLI and the server so both have one behaviour: validating the document, planning a selection (reading an
//! earlier execution's values for reuse), resolving runtime inputs, building the seed and its provenance,
//! recording the execution, and choosing what a re-run or a retry selects. It prints nothing: every outcome
//! is a value or a [`LaunchError`] that callers render as text or JSON.

use engine::Seed;
use plan::{Plan, Request, Source};
use spec::inputs::{self, InputField, InputProblem, InputSource};
use spec::{Document, Entity, Pipeline};
use std::collections::BTreeMap;
use store::{Execution, History, Journal, Mode, NewExecution, NodeKind, Requests, Status};

/// Why nothing was launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The pipeline (or input set) document has errors.
    #[error("{label}: invalid")]
    Invalid {
        /// The document's label.
        label: String,
        /// Its diagnostics (errors and warnings).
        diagnostics: Vec<spec::Diagnostic>,
        /// The document text, to render the diagnostics.
        text: String,
        /// The template files the diagnostics may point into, and where the templates are used.
        templates: Box<(std::sync::Arc<Vec<spec::SourceFile>>, Vec<spec::template::Use>)>,
    },
    /// The document is not what was expected (e.g. a service where a pipeline belongs).
    #[error("{0}")]
    WrongKind(String),
    /// The selection cannot be planned (unknown stage, selection not allowed, …).
    #[error("{0}")]
    Selection(String),
    /// Selected stages depend on values nothing provides.
    #[error("the selected stages depend on values nothing provides")]
    Unsatisfiable(Box<Planned>),
    /// Runtime inputs are missing or break their constraints.
    #[error("runtime inputs are missing or invalid")]
    Inputs(Vec<InputProblem>),
    /// Values given to a running execution are not what it waits for, or break their constraints.
    #[error("the execution cannot take these values")]
    Given(Vec<InputProblem>),
    /// A request value is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl LaunchError {
    /// Render for a terminal.
    pub fn render(&self) -> String {
        match self {
            LaunchError::Invalid { label, diagnostics, text, templates } => {
                let mut s = spec::render_all(diagnostics, label, text, &templates.0, &templates.1);
                s.push_str(&format!("{label}: invalid; nothing was run\n"));
                s
            }
            LaunchError::Inputs(problems) => {
                let mut s = String::from("error: runtime inputs are missing or invalid; nothing runs:\n");
                for p in problems {
                    s.push_str(&format!("  {}: {}\n", p.path, p.message));
                }
                s
            }
            LaunchError::Given(problems) => {
                let mut s = String::from("error: the execution cannot take these values; nothing was given:\n");
                for p in problems {
                    s.push_str(&format!("  {}: {}\n", if p.path.is_empty() { "--input" } else { &p.path }, p.message));
                }
                s
            }
            LaunchError::Unsatisfiable(p) => explain_unmet(&plan_json(p)),
            other => format!("error: {other}\n"),
        }
    }

    /// The JSON form the API returns.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            LaunchError::Invalid { label, diagnostics, .. } => serde_json::json!({
                "error": "invalid_yaml",
                "message": format!("{label}: invalid"),
                "diagnostics": diagnostics.iter().map(|d| {
                    let mut v = serde_json::to_value(d.to_json()).unwrap_or_default();
                    v["severity"] = serde_json::to_value(d.severity).unwrap_or_default();
                    v
                }).collect::<Vec<_>>(),
            }),
            LaunchError::Inputs(problems) => serde_json::json!({
                "error": "invalid_inputs",
                "message": "runtime inputs are missing or invalid; nothing runs",
                "problems": problems.iter().map(|p| serde_json::json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
            }),
            LaunchError::Given(problems) => serde_json::json!({
                "error": "invalid_inputs",
                "message": "the execution cannot take these values; nothing was given",
                "problems": problems.iter().map(|p| serde_json::json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
            }),
            LaunchError::Unsatisfiable(p) => {
                let mut v = plan_json(p);
                v["error"] = "unsatisfiable".into();
                v["message"] = self.to_string().into();
                v
            }
            LaunchError::Selection(m) => serde_json::json!({"error": "bad_selection", "message": m}),
            LaunchError::WrongKind(m) | LaunchError::BadRequest(m) => {
                serde_json::json!({"error": "bad_request", "message": m})
            }
            LaunchError::Store(e) => serde_json::json!({"error": "store", "message": e.to_string()}),
        }
    }
}

impl LaunchError {
    /// The document's problems, as an error.
    pub fn invalid(doc: &Document) -> LaunchError {
        LaunchError::Invalid {
            label: doc.path.clone(),
            diagnostics: doc.diagnostics.clone(),
            text: doc.source.clone(),
            templates: Box::new((doc.files.clone(), doc.uses.clone())),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, LaunchError>;

/// Parse and validate a pipeline document.
pub fn pipeline_document(label: &str, yaml: String) -> Result<Document> {
    let doc = spec::parse_document(label, yaml);
    check_pipeline(doc)
}

/// Require a valid pipeline document.
pub fn check_pipeline(doc: Document) -> Result<Document> {
    if !doc.is_valid() {
        return Err(LaunchError::invalid(&doc));
    }
    match &doc.entity {
        Some(Entity::Pipeline(_)) => Ok(doc),
        other => Err(LaunchError::WrongKind(format!(
            "{}: expected a pipeline file, found a {}",
            doc.path,
            other.as_ref().map_or("?", Entity::kind)
        ))),
    }
}

/// What to run: the stages selected and how their dependencies are met.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Selected stages (empty: all).
    pub stages: Vec<String>,
    /// Also run every stage the selected ones depend on.
    pub with_deps: bool,
    /// Reuse the values of stages that do not run from this execution (id or unique prefix).
    pub from_execution: Option<String>,
    /// Values of paths the selected stages read from stages that do not run.
    pub exprs: BTreeMap<String, String>,
    /// Select stages whatever `allowStageExecutions` says (retry).
    pub any_stage: bool,
    /// Step types a handler runs (`.harness/pipewright.yaml`): not reported as types pipewright cannot run.
    pub handled: Vec<String>,
}

/// A planned selection.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Runtime inputs the stages that run need.
    pub required: Vec<InputField>,
}

/// Read an execution's values for reuse. A stage that execution itself reused is read from where it came from.
pub async fn source(store: &dyn History, id: &str) -> Result<Source> {
    source_at(store, id, 0).await
}

fn source_at<'a>(
    store: &'a dyn History,
    id: &'a str,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Source>> + Send + 'a>> {
    Box::pin(async move {
        let e = store.execution(id).await?;
        let nodes = store.nodes(&e.id).await?;
        let stages: Vec<&store::Node> =
            nodes.iter().filter(|n| n.kind == NodeKind::Stage && n.parent_id.is_none()).collect();
        let statuses = stages.iter().map(|n| (n.identifier.clone(), n.status.to_string())).collect();
        let mut tree = engine::tree_from_nodes(&nodes);
        for n in stages.iter().filter(|n| n.reused_from.is_some()) {
            let from = n.reused_from.as_deref().unwrap_or_default();
            if depth < 16
                && let Ok(earlier) = source_at(store, from, depth + 1).await
                && let Some(sub) =
                    earlier.tree.get("pipeline").and_then(|p| p.get("stages")).and_then(|s| s.get(&n.identifier))
                && let expr::Value::Map(root) = &mut tree
                && let Some(expr::Value::Map(p)) = root.get_mut("pipeline")
                && let Some(expr::Value::Map(s)) = p.get_mut("stages")
            {
                s.insert(n.identifier.clone(), sub.clone());
            }
        }
        Ok(Source { execution_id: e.id, pipeline: e.pipeline, statuses, tree })
    })
}

/// The stage dependency graph of a pipeline document (none when it holds no pipeline).
pub fn stage_graph(doc: &Document) -> Option<plan::Graph> {
    let (Some(body), Some(p)) = (doc.body(), doc.pipeline()) else { return None };
    Some(graph_of(doc, p, body))
}

/// The dependency graph, each edge naming the templates its expressions are written in.
fn graph_of(doc: &Document, p: &spec::Pipeline, body: &spec::Node) -> plan::Graph {
    let mut g = plan::graph(p, &spec::stage_references(p, body, &doc.texts()));
    for e in &mut g.edges {
        for at in &e.at {
            if let Some(u) = doc.uses.iter().find(|u| at.file != 0 && u.file == at.file)
                && !e.templates.contains(&u.template)
            {
                e.templates.push(u.template.clone());
            }
        }
    }
    g
}

/// Plan a selection of a valid pipeline document.
pub async fn plan(doc: &Document, sel: &Selection, store: Option<&dyn History>) -> Result<Planned> {
    let body = doc.body().ok_or_else(|| LaunchError::WrongKind("the document has no pipeline body".into()))?;
    let Some(Entity::Pipeline(p)) = &doc.entity else {
        return Err(LaunchError::WrongKind(format!("{}: not a pipeline", doc.path)));
    };
    let graph = graph_of(doc, p, body);
    let src = match (&sel.from_execution, store) {
        (Some(id), Some(store)) => Some(source(store, id).await?),
        (Some(_), None) => return Err(LaunchError::BadRequest("from_execution needs the execution history".into())),
        _ => None,
    };
    let req = Request {
        selected: sel.stages.clone(),
        with_deps: sel.with_deps,
        supplied: sel.exprs.clone(),
        source: src,
        any_stage: sel.any_stage,
    };
    let mut plan = plan::plan(p, &graph, &req).map_err(|e| LaunchError::Selection(e.to_string()))?;
    let run = plan.run_stages();
    // Steps of types pipewright does not run, in the stages that run: said up front.
    for s in p.all_stages().into_iter().filter(|s| run.contains(&s.identifier.value)) {
        s.spec.execution.walk(|e, _, _| {
            if let spec::ExecutionElement::Step(st) = e
                && st.step_type == spec::StepType::Background
                && !sel.handled.iter().any(|h| h == "Background")
                && let spec::StepSpec::Harness(b) = &st.spec
                && b.get("command").and_then(|c| c.as_str()).is_none_or(|c| c.trim().is_empty())
            {
                plan.warnings.push(format!(
                    "step `{}.{}` is a Background step without `command`: it starts its image's entrypoint in Harness, which pipewright does not run (steps are local processes); the step fails unless it gets a `command` or a failure strategy lets it go on",
                    s.identifier.value, st.identifier.value
                ));
            }
            if let spec::ExecutionElement::Step(st) = e
                && let spec::StepType::Harness(t) = st.step_type
                && !sel.handled.iter().any(|h| h == t)
            {
                plan.warnings.push(format!(
                    "step `{}.{}` is a `{t}` step, which pipewright does not run itself and no step handler runs: the run fails there unless a failure strategy lets it go on (map the type in `.harness/pipewright.yaml`: `stepHandlers: {{{t}: {{script: …}}}}`)",
                    s.identifier.value, st.identifier.value
                ));
            }
        });
    }
    // Runtime inputs pasted into the scripts that run: said up front, with the safe way to read them.
    for pasted in inputs::pasted_inputs(body) {
        let stage = pasted.script.strip_prefix("pipeline.stages.").and_then(|r| r.split('.').next());
        if stage.is_none_or(|s| run.iter().any(|r| r == s)) {
            plan.warnings.push(format!("{}; {}", pasted.message(), pasted.help()));
        }
    }
    let required =
        inputs::runtime_inputs(body).into_iter().filter(|f| f.stage.as_ref().is_none_or(|s| run.contains(s))).collect();
    Ok(Planned { plan, required })
}

/// The JSON shape of a plan (`pipewright plan --output json`, `POST …/plan`).
pub fn plan_json(p: &Planned) -> serde_json::Value {
    serde_json::json!({
        "satisfiable": p.plan.satisfiable,
        "stages": p.plan.stages,
        "required_inputs": p.required.iter().map(|f| {
            let mut v = serde_json::json!({"path": f.path});
            if let Some(d) = &f.input.default { v["default"] = d.clone().into(); }
            if let Some(a) = &f.input.allowed_values { v["allowed_values"] = serde_json::json!(a); }
            if let Some(r) = &f.input.regex { v["regex"] = r.clone().into(); }
            if f.input.execution_input { v["execution_input"] = true.into(); }
            v
        }).collect::<Vec<_>>(),
        "unmet_dependencies": p.plan.unmet_dependencies,
        "warnings": p.plan.warnings,
    })
}

/// The unmet dependencies of a plan (as [`plan_json`] gives them) and how to meet them, for a terminal.
pub fn explain_unmet(plan: &serde_json::Value) -> String {
    let mut s = String::from("error: the selected stages depend on values nothing provides:\n");
    let unmet = plan["unmet_dependencies"].as_array().cloned().unwrap_or_default();
    let mut example = None;
    for u in &unmet {
        let via = if u["via"] == "propagation" { "propagates (useFromStage) from" } else { "reads" };
        s.push_str(&format!(
            "  stage `{}` {via} stage `{}`:\n",
            u["stage"].as_str().unwrap_or_default(),
            u["depends_on"].as_str().unwrap_or_default()
        ));
        for path in u["paths"].as_array().into_iter().flatten() {
            s.push_str(&format!("    {}\n", path.as_str().unwrap_or_default()));
        }
        if let Some(n) = u["note"].as_str() {
            s.push_str(&format!("    ({n})\n"));
        }
        for t in u["templates"].as_array().into_iter().flatten() {
            s.push_str(&format!("    (read in template `{}`)\n", t.as_str().unwrap_or_default()));
        }
        if u["via"] != "propagation" && example.is_none() {
            example = u["paths"][0].as_str().map(String::from);
        }
    }
    s.push_str("meet them with one of:\n");
    s.push_str("  --with-deps                    run the stages they depend on too\n");
    s.push_str("  --from-execution EXEC          reuse the values of an earlier execution (`pipewright history`)\n");
    if let Some(example) = example {
        s.push_str(&format!("  --expr {example}=VALUE   give each value\n"));
    }
    s
}

/// A pipeline ready to run: validated, inputs applied.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The pipeline with inputs applied.
    pub pipeline: Pipeline,
    /// Inputs by path with their source.
    pub inputs: BTreeMap<String, (String, InputSource)>,
    /// The `.executionInput()` fields not given at start: the run asks for them when it reaches them.
    pub asked: Vec<inputs::InputField>,
    /// The resolved pipeline as YAML.
    pub snapshot: String,
    /// The original document text.
    pub source: String,
}

impl Prepared {
    /// Start every CI stage that clones the codebase with its `clone_codebase` step (see [`clone_codebase`])
    /// and record the pipeline as it will run.
    pub fn clone_codebase(&mut self, checkout: Option<&str>, connectors: &BTreeMap<String, String>) {
        if !clone_codebase(&mut self.pipeline, checkout, connectors).is_empty() {
            self.snapshot = Entity::Pipeline(Box::new(self.pipeline.clone())).to_yaml();
        }
    }
}

/// The values an input set document gives (for an overlay, `sets` resolves the input sets it references,
/// later ones winning), each tagged with the input set it came from.
pub fn input_set_values(
    doc: &Document,
    sets: &dyn Fn(&str) -> Option<Document>,
    out: &mut BTreeMap<String, (String, InputSource)>,
) -> Result<()> {
    if !doc.is_valid() {
        return Err(LaunchError::invalid(doc));
    }
    match &doc.entity {
        Some(Entity::InputSet(s)) => {
            let pipeline = doc
                .body()
                .and_then(|b| b.get("pipeline"))
                .ok_or_else(|| LaunchError::WrongKind(format!("{}: the input set has no `pipeline:`", doc.path)))?;
            let src = InputSource::InputSet(s.meta.identifier.value.clone());
            for (k, v) in inputs::input_set_values(pipeline) {
                out.insert(k, (v, src.clone()));
            }
            Ok(())
        }
        Some(Entity::OverlayInputSet(o)) => {
            for r in &o.input_set_references {
                let d = sets(r.as_str()).ok_or_else(|| {
                    LaunchError::BadRequest(format!(
                        "{}: overlay input set references `{}`, which is not a known input set",
                        doc.path, r.value
                    ))
                })?;
                if matches!(d.entity, Some(Entity::OverlayInputSet(_))) {
                    return Err(LaunchError::BadRequest(format!(
                        "{}: `{}` is an overlay; overlays reference input sets, not other overlays",
                        doc.path, r.value
                    )));
                }
                input_set_values(&d, sets, out)?;
            }
            Ok(())
        }
        _ => Err(LaunchError::WrongKind(format!("{}: expected an `inputSet:` or `overlayInputSet:` file", doc.path))),
    }
}

/// Apply runtime inputs to a valid pipeline document (only the inputs of `stages` are required when given).
pub fn prepare(
    doc: &Document,
    supplied: &BTreeMap<String, (String, InputSource)>,
    stages: Option<&[String]>,
) -> Result<Prepared> {
    let body = doc.body().ok_or_else(|| LaunchError::WrongKind("the document has no pipeline body".into()))?;
    let fields = inputs::runtime_inputs(body);
    let values = inputs::resolve(&fields, supplied, stages).map_err(LaunchError::Inputs)?;
    let asked: Vec<inputs::InputField> = fields
        .into_iter()
        .filter(|f| f.input.execution_input && !values.contains_key(&f.path))
        .filter(|f| match (&f.stage, stages) {
            (Some(s), Some(sel)) => sel.contains(s),
            _ => true,
        })
        .collect();
    let paths = asked.iter().map(|f| f.path.clone()).collect();
    let applied = inputs::apply(body, &values, &paths);
    let pipeline = spec::pipeline_from_node(&applied, &doc.texts()).map_err(|diagnostics| LaunchError::Invalid {
        diagnostics,
        label: format!("{} (once runtime inputs were applied)", doc.path),
        text: doc.source.clone(),
        templates: Box::new((doc.files.clone(), doc.uses.clone())),
    })?;
    let snapshot = Entity::Pipeline(Box::new(pipeline.clone())).to_yaml();
    Ok(Prepared { pipeline, inputs: values, asked, snapshot, source: doc.run_source().to_string() })
}

/// The values seeded before a planned execution runs.
pub fn seed(p: &Plan) -> Seed {
    Seed { values: p.seeds.iter().map(|s| (s.path.clone(), s.value.clone())).collect(), reused: p.reused.clone() }
}

/// Where each seeded value comes from (supplied values keep their value; reused ones name the execution).
pub fn provenance(p: &Plan) -> Vec<serde_json::Value> {
    p.seeds
        .iter()
        .map(|s| match &s.from {
            plan::Provenance::Supplied => serde_json::json!({"path": s.path, "value": s.value, "source": s.from}),
            plan::Provenance::Execution { .. } => serde_json::json!({"path": s.path, "source": s.from}),
        })
        .collect()
}

/// How an execution comes to be.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The file it runs from.
    pub source_file: Option<String>,
    /// Mode.
    pub mode: Mode,
    /// The stages that run (empty: all).
    pub selected: Vec<String>,
    /// Where each seeded value comes from.
    pub provenance: Vec<serde_json::Value>,
    /// The execution it derives from: (parent, original).
    pub parent: Option<(String, String)>,
    /// Who starts it.
    pub triggered_by: String,
    /// The execution and stage that run it as a chained pipeline.
    pub chained_from: Option<(String, String)>,
}

impl Launch {
    /// A launch of a planned selection.
    pub fn of(planned: &Planned, mode: Mode, selective: bool, triggered_by: &str) -> Launch {
        Launch {
            source_file: None,
            mode,
            selected: if selective { planned.plan.run_stages() } else { Vec::new() },
            provenance: provenance(&planned.plan),
            parent: None,
            triggered_by: triggered_by.to_string(),
            chained_from: None,
        }
    }
}

/// The org and project a pipeline belongs to (`default` when it does not say).
pub fn scope_of(p: &Pipeline) -> (String, String) {
    (
        p.org_identifier.as_ref().map_or("default".to_string(), |s| s.value.clone()),
        p.project_identifier.as_ref().map_or("default".to_string(), |s| s.value.clone()),
    )
}

/// Record the pipeline version and a new execution for it (Queued), ready for the engine.
pub async fn record(store: &dyn Journal, prepared: &Prepared, launch: &Launch) -> Result<Execution> {
    let p = &prepared.pipeline;
    let (org, project) = scope_of(p);
    let version = store.save_pipeline(&org, &project, &p.identifier, &prepared.source).await?;
    let mut inputs: serde_json::Map<String, serde_json::Value> = prepared
        .inputs
        .iter()
        .map(|(k, (v, src))| {
            // A map or list given for a whole field is kept as data.
            let value = inputs::as_structured(v).unwrap_or_else(|| serde_json::Value::String(v.clone()));
            (k.clone(), serde_json::json!({"value": value, "source": src}))
        })
        .chain(prepared.asked.iter().map(|f| engine::asked::entry(&f.path, &f.owner, &f.input)))
        .collect();
    if !launch.provenance.is_empty() {
        inputs.insert("__dependencies".into(), serde_json::Value::Array(launch.provenance.clone()));
    }
    if let Some((exec, stage)) = &launch.chained_from {
        inputs.insert(CHAINED_FROM.into(), serde_json::json!({"execution_id": exec, "stage": stage}));
    }
    Ok(store
        .create_execution(NewExecution {
            org,
            project,
            pipeline: p.identifier.value.clone(),
            pipeline_version: version,
            mode: launch.mode,
            triggered_by: launch.triggered_by.clone(),
            inputs: serde_json::Value::Object(inputs),
            selected_stages: launch.selected.clone(),
            snapshot: prepared.snapshot.clone(),
            source_file: launch.source_file.clone(),
            parent_id: launch.parent.as_ref().map(|p| p.0.clone()),
            original_id: launch.parent.as_ref().map(|p| p.1.clone()),
        })
        .await?)
}

/// Put a `GitClone` step (`clone_codebase`) first in every CI stage that clones the codebase (`cloneCodebase`
/// true, or unset when the pipeline says what its codebase is in `properties.ci.codebase`). It fetches the
/// codebase's repository — joined to its connector's URL when `connectors` has one, else `checkout` (the local
/// checkout the pipeline file sits in) — at the codebase's `build` (branch, tag, PR, commit), or the current
/// commit, into the workspace. Returns the stages it changed.
fn clone_codebase(p: &mut Pipeline, checkout: Option<&str>, connectors: &BTreeMap<String, String>) -> Vec<String> {
    let codebase = p.properties.as_ref().and_then(|v| v.get("ci")).and_then(|v| v.get("codebase")).cloned();
    let mut spec = serde_json::Map::new();
    if let Some(c) = &codebase {
        let connector = c["connectorRef"].as_str().filter(|k| connectors.contains_key(*k));
        match (connector, checkout) {
            (Some(k), _) => {
                spec.insert("connectorRef".into(), k.into());
                if let Some(r) = c.get("repoName").filter(|r| !r.is_null()) {
                    spec.insert("repoName".into(), r.clone());
                }
            }
            (None, Some(dir)) => {
                spec.insert("repoName".into(), dir.into());
            }
            (None, None) => {
                for k in ["connectorRef", "repoName"] {
                    if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                        spec.insert(k.into(), v.clone());
                    }
                }
            }
        }
        if let Some(b) = c.get("build").filter(|b| b.is_object()) {
            spec.insert("build".into(), b.clone());
        }
        if let Some(d) = c.get("depth").filter(|d| !d.is_null()) {
            spec.insert("depth".into(), d.clone());
        }
    } else if let Some(dir) = checkout {
        spec.insert("repoName".into(), dir.into());
    }
    spec.insert("cloneDirectory".into(), ".".into());
    let mut changed = Vec::new();
    let mut add = |s: &mut spec::Stage| {
        let on = s.spec.clone_codebase.unwrap_or(codebase.is_some());
        if !s.stage_type.is_build() || !on || spec.get("repoName").or(spec.get("connectorRef")).is_none() {
            return;
        }
        let str_ = |v: &str| spec::Str { value: v.to_string(), span: spec::Span::default() };
        let step = spec::Step {
            name: str_("Clone codebase"),
            identifier: str_("clone_codebase"),
            step_type: spec::StepType::GitClone,
            description: None,
            timeout: None,
            spec: spec::StepSpec::Harness(serde_json::Value::Object(spec.clone())),
            when: None,
            failure_strategies: Vec::new(),
            strategy: None,
            span: spec::Span::default(),
        };
        s.spec.execution.steps.insert(0, spec::ExecutionElement::Step(Box::new(step)));
        changed.push(s.identifier.value.clone());
    };
    for el in &mut p.stages {
        match el {
            spec::StageElement::Stage(s) => add(s),
            spec::StageElement::Parallel(items) => {
                for i in items {
                    if let spec::StageElement::Stage(s) = i {
                        add(s);
                    }
                }
            }
        }
    }
    changed
}

/// The key of an execution's inputs that says which execution and stage ran it as a chained pipeline.
pub const CHAINED_FROM: &str = "__chained_from";

/// The execution and stage that ran `e` as a chained pipeline, if one did.
pub fn chained_from(e: &Execution) -> Option<(String, String)> {
    let v = e.inputs.get(CHAINED_FROM)?;
    Some((v["execution_id"].as_str()?.to_string(), v["stage"].as_str()?.to_string()))
}

/// Prepare and record the child execution a `Pipeline` stage asks for: the whole pipeline `doc`, with the
/// runtime inputs the stage gives (in the child's shape), its CI stages' `cloneCodebase` fetching from
/// `checkout` or through `connectors` (see [`clone_codebase`]), linked to the parent's stage. The caller runs
/// it.
#[allow(clippy::too_many_arguments)]
pub async fn child(
    store: &dyn Journal,
    history: &dyn History,
    doc: &Document,
    req: &engine::chain::ChildRequest,
    triggered_by: &str,
    source_file: Option<String>,
    checkout: Option<&str>,
    connectors: &BTreeMap<String, String>,
) -> Result<(Execution, Prepared)> {
    let planned = plan(doc, &Selection::default(), Some(history)).await?;
    let mut supplied = BTreeMap::new();
    if !req.inputs.is_null() {
        // JSON is YAML: the inputs read as an input set's `pipeline:` body.
        let text = serde_json::to_string(&req.inputs).unwrap_or_default();
        let node = spec::yaml::load(&text)
            .map_err(|d| LaunchError::BadRequest(format!("the stage's inputs: {}", d.message)))?;
        let from = format!("stage {} of execution {}", req.parent_stage, req.parent_execution);
        for (k, v) in inputs::input_set_values(&node) {
            supplied.insert(k, (v, InputSource::InputSet(from.clone())));
        }
    }
    let mut prepared = prepare(doc, &supplied, None)?;
    prepared.clone_codebase(checkout, connectors);
    let mut launch = Launch::of(&planned, Mode::Full, false, triggered_by);
    launch.source_file = source_file;
    launch.chained_from = Some((req.parent_execution.clone(), req.parent_stage.clone()));
    let exec = record(store, &prepared, &launch).await?;
    Ok((exec, prepared))
}

/// The runtime inputs an execution ran with, as supplied values for a new one.
pub fn original_inputs(e: &Execution) -> BTreeMap<String, (String, InputSource)> {
    e.inputs
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| *k != "__dependencies" && *k != CHAINED_FROM)
                // What was asked while it ran is asked again.
                .filter(|(_, v)| v["source"] != engine::asked::SOURCE)
                .filter_map(|(k, v)| {
                    let value = match &v["value"] {
                        serde_json::Value::String(s) => s.clone(),
                        data @ (serde_json::Value::Object(_) | serde_json::Value::Array(_)) => inputs::structured(data),
                        _ => return None,
                    };
                    Some((k.clone(), (value, InputSource::Given)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The (parent, original) link of an execution derived from `e`.
pub fn derived_from(e: &Execution) -> (String, String) {
    (e.id.clone(), e.original_id.clone().unwrap_or_else(|| e.id.clone()))
}

/// What a re-run selects: the same selection, supplied values and source when `stages` is empty; otherwise
/// those stages, reusing every dependency outside them from `e`.
pub fn rerun_selection(e: &Execution, stages: &[String]) -> (Selection, Mode) {
    if stages.is_empty() {
        let deps = e.inputs.get("__dependencies").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        let from = deps.iter().find_map(|d| d["source"]["execution_id"].as_str().map(String::from));
        let exprs = deps
            .iter()
            .filter(|d| d["source"]["kind"] == "supplied")
            .filter_map(|d| Some((d["path"].as_str()?.to_string(), d["value"].as_str()?.to_string())))
            .collect();
        (
            Selection { stages: e.selected_stages.clone(), from_execution: from, exprs, ..Selection::default() },
            Mode::Rerun,
        )
    } else {
        (
            Selection { stages: stages.to_vec(), from_execution: Some(e.id.clone()), ..Selection::default() },
            Mode::RerunStage,
        )
    }
}

/// What a retry of `e` selects: from `stage` (or the first stage group with a failure) on, only the failed
/// stages of that group when `only_failed`; every dependency before it is reused from `e`.
pub async fn retry_selection(
    store: &dyn History,
    e: &Execution,
    doc: &Document,
    stage: Option<&str>,
    only_failed: bool,
) -> Result<Selection> {
    match e.status {
        Status::Failed | Status::Aborted | Status::Expired | Status::ApprovalRejected => {}
        s if !s.is_final() => {
            return Err(LaunchError::BadRequest(format!(
                "execution {} is still {s}; retry it once it has ended",
                e.id
            )));
        }
        s => {
            return Err(LaunchError::BadRequest(format!(
                "execution {} ended {s}; there is nothing to retry (a re-run runs it again)",
                e.id
            )));
        }
    }
    let Some(Entity::Pipeline(p)) = &doc.entity else {
        return Err(LaunchError::WrongKind(format!("execution {} did not run a valid pipeline", e.id)));
    };
    let nodes = store.nodes(&e.id).await?;
    let status_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.kind == NodeKind::Stage && n.parent_id.is_none() && n.identifier == id)
            .map(|n| n.status)
    };
    let groups = p.stage_groups();
    let start = match stage {
        Some(s) => groups.iter().position(|g| g.iter().any(|x| x.identifier.value == *s)).ok_or_else(|| {
            let all: Vec<&str> = p.all_stages().iter().map(|s| s.identifier.as_str()).collect();
            let hint =
                spec::suggest(s, all.iter().copied()).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
            LaunchError::Selection(format!("stage `{s}` does not exist in pipeline `{}`{hint}", p.identifier.value))
        })?,
        None => groups
            .iter()
            .position(|g| g.iter().any(|s| status_of(&s.identifier).is_some_and(|st| !st.is_good())))
            .ok_or_else(|| LaunchError::BadRequest("no stage of that execution failed".into()))?,
    };
    let was_selected = |id: &str| e.selected_stages.is_empty() || e.selected_stages.iter().any(|s| s == id);
    let mut stages = Vec::new();
    for (i, g) in groups.iter().enumerate().skip(start) {
        for s in g {
            let id = s.identifier.value.clone();
            let failed = status_of(&id).is_some_and(|st| !st.is_good());
            if i == start && only_failed && stage.is_none() && !failed {
                continue;
            }
            if was_selected(&id) {
                stages.push(id);
            }
        }
    }
    Ok(Selection { stages, from_execution: Some(e.id.clone()), any_stage: true, ..Selection::default() })
}

/// The document an execution ran (its pipeline YAML as recorded).
pub async fn recorded_document(store: &dyn History, e: &Execution) -> Result<Document> {
    let yaml = store.pipeline_yaml(&e.org, &e.project, &e.pipeline, e.pipeline_version).await?;
    let label = format!("{} (as run by execution {})", e.source_file.as_deref().unwrap_or(&e.pipeline), e.id);
    check_pipeline(spec::parse_document(&label, yaml))
}

/// What an execution whose process died needs to go on: its recorded document, its pipeline as it started
/// (runtime inputs applied: the recorded snapshot), and its seed — supplied values as recorded, values reused
/// from earlier executions read from those executions again.
pub async fn resumable(store: &dyn History, e: &Execution) -> Result<(Document, spec::Pipeline, engine::Seed)> {
    let doc = recorded_document(store, e).await?;
    let snapshot = if e.snapshot.is_empty() { store.execution(&e.id).await?.snapshot } else { e.snapshot.clone() };
    let label = format!("execution {} as it started", e.id);
    let snap = spec::parse_document(&label, snapshot);
    let pipeline = snap
        .pipeline()
        .cloned()
        .ok_or_else(|| LaunchError::WrongKind(format!("{label}: the recorded pipeline cannot be read back")))?;
    let mut seed = engine::Seed::default();
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for d in e.inputs.get("__dependencies").and_then(|d| d.as_array()).into_iter().flatten() {
        let Some(path) = d["path"].as_str() else { continue };
        match d["source"]["execution_id"].as_str() {
            None => seed.values.push((path.to_string(), expr::Value::from(d["value"].clone()))),
            Some(from) => {
                if !sources.contains_key(from) {
                    sources.insert(from.to_string(), source(store, from).await?);
                }
                let src = &sources[from];
                let mut cur = Some(&src.tree);
                for seg in path.split('.') {
                    cur = cur.and_then(|v| v.get(seg));
                }
                if let Some(v) = cur {
                    seed.values.push((path.to_string(), v.clone()));
                }
                if let Some(stage) = d["source"]["stage"].as_str() {
                    let status = src.statuses.get(stage).cloned().unwrap_or_else(|| "Success".into());
                    seed.reused.insert(stage.to_string(), (from.to_string(), status));
                }
            }
        }
    }
    Ok((doc, pipeline, seed))
}

/// Secrets a pipeline reads: `secrets.getValue("id")` anywhere, and the values of `Secret` variables.
pub fn secret_refs(doc: &Document) -> Vec<String> {
    let ids: std::collections::BTreeSet<String> = secret_uses(doc).into_iter().map(|(id, _)| id).collect();
    ids.into_iter().collect()
}

/// The secrets a pipeline reads, each with the stage that reads it (`None`: the pipeline itself), by the id
/// the engine looks them up with: as written in `secrets.getValue("id")`, without its `account.` / `org.`
/// prefix for a `Secret` variable.
pub fn secret_uses(doc: &Document) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut add = |id: &str, stage: Option<&str>| {
        let entry = (id.to_string(), stage.map(String::from));
        if !out.contains(&entry) {
            out.push(entry);
        }
    };
    if let Some(body) = doc.body() {
        inputs::walk_paths(body, "pipeline", None, &mut |_, stage, node| {
            if let Some(text) = node.as_scalar()
                && text.contains("<+")
                && let Ok(t) = expr::parse_template(text)
            {
                for r in t.references(&expr::Scope::default()) {
                    if let Some(id) = r.written.strip_prefix("secrets.getValue(\"").and_then(|s| s.strip_suffix("\")"))
                    {
                        add(id, stage);
                    }
                }
            }
        });
    }
    if let Some(Entity::Pipeline(p)) = &doc.entity {
        let literal = |v: &spec::Variable| {
            (v.var_type == spec::VariableType::Secret)
                .then(|| v.value.as_ref().or(v.default.as_ref()))
                .flatten()
                .filter(|val| !val.value.contains("<+"))
                .map(|val| {
                    let id = val.value.trim();
                    id.strip_prefix("account.").or(id.strip_prefix("org.")).unwrap_or(id).to_string()
                })
        };
        for v in &p.variables {
            if let Some(id) = literal(v) {
                add(&id, None);
            }
        }
        for s in p.all_stages() {
            for v in &s.variables {
                if let Some(id) = literal(v) {
                    add(&id, Some(&s.identifier.value));
                }
            }
        }
    }
    out
}

/// The secrets the stages in `run` (and the pipeline itself) read that `have` does not give: checked before
/// anything runs, by the CLI and the server alike.
pub fn missing_secrets(doc: &Document, run: &[String], have: impl Fn(&str) -> bool) -> Vec<String> {
    let ids: std::collections::BTreeSet<String> = secret_uses(doc)
        .into_iter()
        .filter(|(_, stage)| stage.as_ref().is_none_or(|s| run.contains(s)))
        .map(|(id, _)| id)
        .filter(|id| !have(id))
        .collect();
    ids.into_iter().collect()
}

/// The step a node runs, found in the pipeline by the node's path: its stage (an iteration's `_N` suffix
/// removed when needed), the step groups it sits in, and its identifier — the same identifier may be used in
/// two step groups of one stage.
pub fn step_of<'a>(pipeline: &'a spec::Pipeline, node: &store::Node) -> Option<&'a spec::Step> {
    fn base(id: &str) -> Option<&str> {
        id.rsplit_once('_').filter(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).map(|(b, _)| b)
    }
    /// The element of `els` (parallel blocks looked through) named `id`, or its base name for an iteration.
    fn child<'a>(els: &'a [spec::ExecutionElement], id: &str) -> Option<&'a spec::ExecutionElement> {
        let named = |want: &str| {
            fn look<'a>(els: &'a [spec::ExecutionElement], want: &str) -> Option<&'a spec::ExecutionElement> {
                els.iter().find_map(|e| match e {
                    spec::ExecutionElement::Step(s) if s.identifier.value == want => Some(e),
                    spec::ExecutionElement::StepGroup(g) if g.identifier.value == want => Some(e),
                    spec::ExecutionElement::Parallel(p) => look(p, want),
                    _ => None,
                })
            }
            look(els, want)
        };
        named(id).or_else(|| base(id).and_then(named))
    }
    let mut segs = node.path.split('.');
    let first = segs.next().unwrap_or_default();
    let stages = pipeline.all_stages();
    let stage = stages
        .iter()
        .find(|s| s.identifier.value == first)
        .or_else(|| base(first).and_then(|b| stages.iter().find(|s| s.identifier.value == b)))?;
    let mut rest: Vec<&str> = segs.collect();
    let ex = &stage.spec.execution;
    let mut els: &[spec::ExecutionElement] = &ex.steps;
    if rest.first() == Some(&"rollback") {
        els = &ex.rollback_steps;
        rest.remove(0);
    }
    let (last, groups) = rest.split_last()?;
    for g in groups {
        match child(els, g)? {
            spec::ExecutionElement::StepGroup(group) => els = &group.steps,
            _ => return None,
        }
    }
    match child(els, last)? {
        spec::ExecutionElement::Step(s) => Some(s),
        _ => None,
    }
}

/// The node of execution `e` waiting in `status` (an approval or an intervention): the only one, or the one
/// `node` names by path or identifier.
pub async fn waiting_node(
    store: &dyn History,
    e: &Execution,
    node: Option<&str>,
    status: Status,
) -> Result<store::Node> {
    let waiting: Vec<store::Node> = store.nodes(&e.id).await?.into_iter().filter(|n| n.status == status).collect();
    let chosen: Vec<&store::Node> =
        waiting.iter().filter(|n| node.is_none_or(|p| n.id == p || n.path == p || n.identifier == p)).collect();
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        [] if waiting.is_empty() => {
            Err(LaunchError::BadRequest(format!("no step of execution {} is {status} (it is {})", e.id, e.status)))
        }
        [] => Err(LaunchError::BadRequest(format!(
            "no waiting step is `{}`; waiting: {}",
            node.unwrap_or_default(),
            waiting.iter().map(|n| n.path.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(LaunchError::BadRequest(format!(
            "several steps are waiting; choose one with --node: {}",
            many.iter().map(|n| n.path.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// What giving values to a running execution did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Given {
    /// The execution.
    pub execution_id: String,
    /// The paths given.
    pub given: Vec<String>,
    /// The paths it still waits for.
    pub waiting: Vec<String>,
}

/// Give values for the `.executionInput()` fields execution `e` waits for, by `by`: checked as at start (all
/// or nothing), then recorded as a decision for each node that asks; the engine, wherever it runs, takes them
/// from there.
pub async fn give_inputs(
    store: &dyn Requests,
    e: &Execution,
    values: &BTreeMap<String, String>,
    by: &str,
) -> Result<Given> {
    if e.status.is_final() {
        return Err(LaunchError::BadRequest(format!("execution {} ended {}; it waits for nothing", e.id, e.status)));
    }
    let by_node = engine::asked::check(&e.inputs, values).map_err(|problems| {
        LaunchError::Given(
            problems.into_iter().map(|p| InputProblem { path: p.path, message: p.message, missing: false }).collect(),
        )
    })?;
    for (node_id, vals) in by_node {
        store
            .put_decision(&store::Decision {
                execution_id: e.id.clone(),
                node_id,
                action: store::DecisionAction::Provide,
                by: by.to_string(),
                comment: None,
                inputs: serde_json::to_value(vals).unwrap_or_default(),
                at: store::now_ms(),
            })
            .await?;
    }
    let waiting = engine::asked::waiting(&e.inputs).into_iter().map(|w| w.path).filter(|p| !values.contains_key(p));
    Ok(Given { execution_id: e.id.clone(), given: values.keys().cloned().collect(), waiting: waiting.collect() })
}
