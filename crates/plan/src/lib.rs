//! What a selective run needs, computed before anything runs. This crate owns the stage dependency graph
//! (stage B depends on stage A when an expression in B reads `pipeline.stages.A.…`, or B propagates its
//! service / environment / infrastructure from A with `useFromStage`; every edge keeps why), the closure of a
//! selection (`--with-deps`), and the plan: per stage run / skip / reuse with a reason, every unmet dependency
//! with its exact paths, and the values to seed (supplied with `--expr`, or reused from an earlier execution,
//! each with its provenance). It spawns nothing and reads no database: an earlier execution arrives as values.

use expr::Value;
use serde::Serialize;
use spec::{Pipeline, Stage, StageRef, suggest};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How one stage depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// An expression reads the other stage.
    Expression,
    /// `useFromStage` propagates a setting from the other stage.
    Propagation,
}

/// A dependency edge: `stage` depends on `depends_on`.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    /// The dependent stage.
    pub stage: String,
    /// The stage it needs.
    pub depends_on: String,
    /// Why.
    pub via: Via,
    /// The exact paths read (expressions), or `pipeline.stages.X.service` / `.env` / `.infra` (propagation).
    pub paths: Vec<String>,
    /// Where each expression path is written (a span's `file` is not 0 when it is inside a template).
    pub at: Vec<spec::Span>,
    /// The templates the reading expressions are written in (`ID@VERSION`), when the caller knows them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}

/// The dependency graph of a pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    /// Stages in order.
    pub stages: Vec<String>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Stage → indexes of its edges (what it depends on).
    #[serde(skip)]
    out: HashMap<String, Vec<usize>>,
    /// Stage → indexes of the edges pointing at it (what depends on it).
    #[serde(skip)]
    into: HashMap<String, Vec<usize>>,
}

fn propagations(s: &Stage) -> Vec<(&'static str, String)> {
    let spec = &s.spec;
    let mut out = Vec::new();
    if let Some(u) = spec.service.as_ref().and_then(|c| c.use_from_stage.as_ref()) {
        out.push(("service", u.stage.value.clone()));
    }
    if let Some(u) = spec.service_config.as_ref().and_then(|c| c.use_from_stage.as_ref()) {
        out.push(("service", u.stage.value.clone()));
    }
    if let Some(u) = spec.services.as_ref().and_then(|c| c.use_from_stage.as_ref()) {
        out.push(("service", u.stage.value.clone()));
    }
    if let Some(u) = spec.environment.as_ref().and_then(|c| c.use_from_stage.as_ref()) {
        out.push(("env", u.stage.value.clone()));
        out.push(("infra", u.stage.value.clone()));
    }
    if let Some(u) = spec.infrastructure.as_ref().and_then(|c| c.use_from_stage.as_ref()) {
        out.push(("env", u.stage.value.clone()));
        out.push(("infra", u.stage.value.clone()));
    }
    out
}

/// Build the graph from a pipeline and its cross-stage references (`spec::stage_references`).
pub fn graph(p: &Pipeline, refs: &[StageRef]) -> Graph {
    let mut edges: Vec<Edge> = Vec::new();
    let mut at: HashMap<(&str, &str, bool), usize> = HashMap::new();
    for r in refs {
        let i = *at.entry((r.stage.as_str(), r.reads.as_str(), false)).or_insert_with(|| {
            edges.push(Edge {
                stage: r.stage.clone(),
                depends_on: r.reads.clone(),
                via: Via::Expression,
                paths: Vec::new(),
                at: Vec::new(),
                templates: Vec::new(),
            });
            edges.len() - 1
        });
        let e = &mut edges[i];
        if !e.paths.contains(&r.path) {
            e.paths.push(r.path.clone());
            e.at.push(r.span);
        }
    }
    let mut prop: HashMap<(String, String), usize> = HashMap::new();
    for s in p.all_stages() {
        for (what, from) in propagations(s) {
            let key = (s.identifier.value.clone(), from.clone());
            let i = *prop.entry(key).or_insert_with(|| {
                edges.push(Edge {
                    stage: s.identifier.value.clone(),
                    depends_on: from.clone(),
                    via: Via::Propagation,
                    paths: Vec::new(),
                    at: Vec::new(),
                    templates: Vec::new(),
                });
                edges.len() - 1
            });
            let path = format!("pipeline.stages.{from}.{what}");
            if !edges[i].paths.contains(&path) {
                edges[i].paths.push(path);
            }
        }
    }
    edges.sort_by(|a, b| (&a.stage, &a.depends_on, a.via as u8).cmp(&(&b.stage, &b.depends_on, b.via as u8)));
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    let mut into: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in edges.iter().enumerate() {
        out.entry(e.stage.clone()).or_default().push(i);
        into.entry(e.depends_on.clone()).or_default().push(i);
    }
    Graph { stages: p.all_stages().iter().map(|s| s.identifier.value.clone()).collect(), edges, out, into }
}

impl Graph {
    /// The edges from `stage` to the stages it depends on directly.
    pub fn deps(&self, stage: &str) -> impl Iterator<Item = &Edge> {
        self.out.get(stage).into_iter().flatten().map(|i| &self.edges[*i])
    }

    /// The edges from the stages that depend directly on `stage`.
    pub fn dependents(&self, stage: &str) -> impl Iterator<Item = &Edge> {
        self.into.get(stage).into_iter().flatten().map(|i| &self.edges[*i])
    }

    /// `selected` and every stage they depend on, transitively.
    pub fn closure(&self, selected: &[String]) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = selected.iter().cloned().collect();
        let mut todo: Vec<String> = selected.to_vec();
        while let Some(s) = todo.pop() {
            for e in self.deps(&s) {
                if out.insert(e.depends_on.clone()) {
                    todo.push(e.depends_on.clone());
                }
            }
        }
        out
    }
}

/// An earlier execution whose values may be reused.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its id.
    pub execution_id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Final status per stage identifier.
    pub statuses: BTreeMap<String, String>,
    /// Its values: `{pipeline: {stages: {…}}}` as the engine builds them.
    pub tree: Value,
}

/// What the user asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Stages to run (empty: all).
    pub selected: Vec<String>,
    /// Add what the selection depends on.
    pub with_deps: bool,
    /// Values for expression paths (`--expr PATH=VALUE`).
    pub supplied: BTreeMap<String, String>,
    /// An execution to reuse values from.
    pub source: Option<Source>,
    /// Select stages even when the pipeline does not allow selective executions (retrying a failed
    /// execution from its failed stage is always allowed).
    pub any_stage: bool,
}

/// What happens to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It runs.
    Run,
    /// It does not run.
    Skip,
    /// It does not run; its values come from an earlier execution.
    Reuse,
}

/// One stage of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// Stage identifier.
    pub identifier: String,
    /// Run, skip or reuse.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// The execution its values come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// A dependency nothing meets.
#[derive(Debug, Clone, Serialize)]
pub struct Unmet {
    /// The selected stage.
    pub stage: String,
    /// The stage it needs.
    pub depends_on: String,
    /// The paths with no value.
    pub paths: Vec<String>,
    /// Expression or propagation.
    pub via: Via,
    /// Why an earlier execution could not serve, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The templates the reading expressions are written in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}

/// Where a seeded value comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Provenance {
    /// Given with `--expr`.
    Supplied,
    /// Taken from an earlier execution.
    Execution {
        /// Its id.
        execution_id: String,
        /// The stage it came from.
        stage: String,
    },
}

/// A value put in place before the run.
#[derive(Debug, Clone, Serialize)]
pub struct Seed {
    /// Fully-qualified path.
    pub path: String,
    /// Value.
    pub value: Value,
    /// Where it comes from.
    pub from: Provenance,
}

/// The plan for a request.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Whether every dependency is met.
    pub satisfiable: bool,
    /// Per stage, in pipeline order.
    pub stages: Vec<StagePlan>,
    /// Unmet dependencies.
    pub unmet_dependencies: Vec<Unmet>,
    /// Values to seed before running.
    #[serde(skip)]
    pub seeds: Vec<Seed>,
    /// Stages reused, with the execution they come from.
    #[serde(skip)]
    pub reused: BTreeMap<String, (String, String)>,
    /// Notes (e.g. an `--expr` path nothing reads).
    pub warnings: Vec<String>,
}

impl Plan {
    /// The stages that run.
    pub fn run_stages(&self) -> Vec<String> {
        self.stages.iter().filter(|s| s.action == Action::Run).map(|s| s.identifier.clone()).collect()
    }
}

/// Why no plan can be made at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The pipeline does not allow selecting stages.
    #[error(
        "pipeline `{0}` does not allow selective stage executions; set `allowStageExecutions: true` in the pipeline to select stages (running the whole pipeline works)"
    )]
    NotAllowed(String),
    /// A selected stage does not exist.
    #[error("stage `{name}` does not exist in pipeline `{pipeline}`{hint}; stages: {stages}")]
    UnknownStage {
        /// The name given.
        name: String,
        /// The pipeline.
        pipeline: String,
        /// "did you mean".
        hint: String,
        /// The stages there are.
        stages: String,
    },
    /// The source execution is of another pipeline.
    #[error("execution {execution} is of pipeline `{other}`, not `{pipeline}`")]
    OtherPipeline {
        /// The execution.
        execution: String,
        /// Its pipeline.
        other: String,
        /// This pipeline.
        pipeline: String,
    },
}

fn get<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = root;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// Make the plan for a request.
pub fn plan(p: &Pipeline, g: &Graph, req: &Request) -> Result<Plan, PlanError> {
    let all: Vec<String> = g.stages.clone();
    if let Some(src) = &req.source
        && src.pipeline != p.identifier.value
    {
        return Err(PlanError::OtherPipeline {
            execution: src.execution_id.clone(),
            other: src.pipeline.clone(),
            pipeline: p.identifier.value.clone(),
        });
    }
    let selective = !req.selected.is_empty();
    if selective && !p.allow_stage_executions && !req.any_stage {
        return Err(PlanError::NotAllowed(p.identifier.value.clone()));
    }
    for s in &req.selected {
        if !all.contains(s) {
            return Err(PlanError::UnknownStage {
                name: s.clone(),
                pipeline: p.identifier.value.clone(),
                hint: suggest(s, all.iter().map(String::as_str))
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default(),
                stages: all.join(", "),
            });
        }
    }
    let run: BTreeSet<String> = if !selective {
        all.iter().cloned().collect()
    } else if req.with_deps {
        g.closure(&req.selected)
    } else {
        req.selected.iter().cloned().collect()
    };
    let mut unmet = Vec::new();
    let mut seeds = Vec::new();
    let mut reused: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut used_supplied: BTreeSet<&str> = BTreeSet::new();
    let mut sees_skipped: Vec<String> = Vec::new();
    for s in all.iter().filter(|s| run.contains(*s)) {
        for e in g.deps(s).filter(|e| !run.contains(&e.depends_on)) {
            let src_ok = req.source.as_ref().and_then(|src| {
                let st = src.statuses.get(&e.depends_on)?;
                matches!(st.as_str(), "Success" | "IgnoreFailed").then_some(src)
            });
            let mut missing = Vec::new();
            for path in &e.paths {
                if let Some(v) = req.supplied.get(path) {
                    used_supplied.insert(path);
                    seeds.push(Seed {
                        path: path.clone(),
                        value: Value::String(v.clone()),
                        from: Provenance::Supplied,
                    });
                } else if let Some(src) = src_ok.filter(|src| get(&src.tree, path).is_some()) {
                    reused
                        .insert(e.depends_on.clone(), (src.execution_id.clone(), src.statuses[&e.depends_on].clone()));
                } else if e.via == Via::Expression && path.split('.').count() == 4 && path.ends_with(".status") {
                    // A stage that does not run has a status: SKIPPED. Say so: a `when` written for a full run
                    // may decide otherwise than its author expects.
                    sees_skipped.push(format!(
                        "stage `{s}` reads the status of stage `{}`, which does not run: it will see SKIPPED",
                        e.depends_on
                    ));
                } else {
                    missing.push(path.clone());
                }
            }
            if !missing.is_empty() {
                let note = req.source.as_ref().map(|src| match src.statuses.get(&e.depends_on) {
                    None => format!("stage `{}` did not run in execution {}", e.depends_on, src.execution_id),
                    Some(st) if src_ok.is_none() => {
                        format!(
                            "stage `{}` ended {st} in execution {}, so it cannot serve",
                            e.depends_on, src.execution_id
                        )
                    }
                    Some(_) => format!("execution {} has no value at these paths", src.execution_id),
                });
                unmet.push(Unmet {
                    stage: s.clone(),
                    depends_on: e.depends_on.clone(),
                    paths: missing,
                    via: e.via,
                    note,
                    templates: e.templates.clone(),
                });
            }
        }
    }
    // A reused stage brings its whole subtree (outputs, variables, status, service / environment).
    if let Some(src) = &req.source {
        for (stage, (exec, _)) in &reused {
            if let Some(v) = get(&src.tree, &format!("pipeline.stages.{stage}")) {
                seeds.push(Seed {
                    path: format!("pipeline.stages.{stage}"),
                    value: v.clone(),
                    from: Provenance::Execution { execution_id: exec.clone(), stage: stage.clone() },
                });
            }
        }
    }
    let mut warnings = sees_skipped;
    for path in req.supplied.keys() {
        if !used_supplied.contains(path.as_str()) {
            let known: Vec<&str> = g.edges.iter().flat_map(|e| e.paths.iter().map(String::as_str)).collect();
            let hint =
                suggest(path, known.iter().copied()).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
            warnings.push(format!(
                "--expr {path}: no stage that runs reads this path from a stage that does not run{hint}"
            ));
        }
    }
    let stages = all
        .iter()
        .map(|s| {
            if run.contains(s) {
                let reason = if !selective {
                    "full run".to_string()
                } else if req.selected.contains(s) {
                    "selected".to_string()
                } else {
                    let needed_by: Vec<&str> =
                        g.dependents(s).filter(|e| run.contains(&e.stage)).map(|e| e.stage.as_str()).collect();
                    let mut templates: Vec<&str> = g
                        .dependents(s)
                        .filter(|e| run.contains(&e.stage))
                        .flat_map(|e| e.templates.iter().map(String::as_str))
                        .collect();
                    templates.dedup();
                    let read_in = if templates.is_empty() {
                        String::new()
                    } else {
                        format!("; read in template {}", templates.join(", "))
                    };
                    format!("needed by {} (--with-deps{read_in})", needed_by.join(", "))
                };
                StagePlan { identifier: s.clone(), action: Action::Run, reason, reused_from: None }
            } else if let Some((exec, status)) = reused.get(s) {
                StagePlan {
                    identifier: s.clone(),
                    action: Action::Reuse,
                    reason: format!("its values are reused (it ended {status} there)"),
                    reused_from: Some(exec.clone()),
                }
            } else {
                StagePlan {
                    identifier: s.clone(),
                    action: Action::Skip,
                    reason: "not selected".into(),
                    reused_from: None,
                }
            }
        })
        .collect();
    Ok(Plan { satisfiable: unmet.is_empty(), stages, unmet_dependencies: unmet, seeds, reused, warnings })
}
