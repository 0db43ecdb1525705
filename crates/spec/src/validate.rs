//! Semantic validation of a parsed pipeline: duplicate identifiers, `useFromStage` targets, and every
//! `<+…>` expression in the file — that it parses, that its runtime-input modifiers are well formed, and that
//! each stage, step, step group, variable, output variable and matrix axis it references exists and, for other
//! stages, runs earlier (with "did you mean" where a name is close).

use crate::diag::{Diagnostic, Severity, Span};
use crate::model::*;
use crate::read::{Reader, did_you_mean};
use crate::yaml::{Node, Yaml};
use expr::{Reference, Scope};
use std::collections::HashMap;

const PIPELINE_FIELDS: &[&str] = &[
    "name",
    "identifier",
    "sequenceId",
    "executionId",
    "startTs",
    "endTs",
    "status",
    "currentStatus",
    "triggeredBy",
    "triggerType",
    "selectedStages",
    "tags",
    "orgIdentifier",
    "projectIdentifier",
    "description",
    "variables",
    "stages",
    "properties",
    "executionUrl",
    "delegateSelectors",
    "storeType",
    "repo",
    "branch",
];
const CONTEXT_ROOTS: &[&str] = &[
    "secrets",
    "trigger",
    "codebase",
    "account",
    "org",
    "project",
    "variable",
    "eventPayload",
    "INFRA_KEY",
    "INFRA_KEY_SHORT_ID",
    "httpResponseCode",
    "httpResponseBody",
    "httpResponseHeaders",
    "httpUrl",
    "httpMethod",
    "json",
    "xml",
    "step",
    "approval",
    "executionInput",
    "rollbackArtifact",
    "instance",
];
const DEPLOY_ROOTS: &[&str] =
    &["service", "serviceVariables", "env", "infra", "artifact", "artifacts", "manifest", "manifests", "serviceConfig"];
/// The values a status has in Harness expressions (`<+pipeline.stages.s.status> == "SUCCEEDED"`).
pub const STATUS_VALUES: &[&str] = &[
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "ABORTED",
    "EXPIRED",
    "IGNORE_FAILED",
    "SKIPPED",
    "APPROVAL_WAITING",
    "APPROVAL_REJECTED",
    "INTERVENTION_WAITING",
    "INPUT_WAITING",
    "PAUSED",
];

/// The string literals an expression compares a status with (`== "Success"`), with their byte ranges.
fn status_comparisons(e: &expr::Expr) -> Vec<(std::ops::Range<usize>, String)> {
    fn is_status(e: &expr::Expr) -> bool {
        match &e.kind {
            expr::ExprKind::Path(segs) => {
                segs.last().is_some_and(|s| matches!(s.to_string().as_str(), "status" | "currentStatus"))
            }
            expr::ExprKind::Group(inner) => is_status(inner),
            _ => false,
        }
    }
    let mut out = Vec::new();
    e.walk(&mut |x| {
        if let expr::ExprKind::Binary(expr::BinaryOp::Eq | expr::BinaryOp::Ne, a, b) = &x.kind {
            for (status, other) in [(a, b), (b, a)] {
                if is_status(status)
                    && let expr::ExprKind::Literal(expr::Value::String(lit)) = &other.kind
                {
                    out.push((other.span.clone(), lit.clone()));
                }
            }
        }
    });
    out
}

/// The status value a literal that is not one was meant to be (`Success` → `SUCCEEDED`).
fn status_meant(lit: &str) -> Option<&'static str> {
    let folded = lit.to_ascii_uppercase().replace(['-', ' '], "_");
    match folded.as_str() {
        "SUCCESS" | "SUCCEEDED" => Some("SUCCEEDED"),
        "IGNOREFAILED" => Some("IGNORE_FAILED"),
        _ => STATUS_VALUES.iter().copied().find(|v| *v == folded || v.replace('_', "") == folded),
    }
}

const STRATEGY_FIELDS: &[&str] = &["iteration", "iterations", "identifierPostFix", "nodeName", "currentStatus"];

enum Frame {
    Matrix(Vec<String>),
    Repeat { items: bool },
    Parallelism,
}

/// Where an element's identifier must be unique: rollback or not, the step groups around it, the identifier.
type ElementKey<'a> = (bool, Vec<&'a str>, &'a str);

/// Whether a scalar holds a `<+` (a `<` is looked for with memchr; most scalars have none).
fn has_expression(s: &str) -> bool {
    s.match_indices('<').any(|(i, _)| s.as_bytes().get(i + 1) == Some(&b'+'))
}

struct Walk<'a> {
    p: Option<&'a Pipeline>,
    order: &'a HashMap<&'a str, (usize, &'a Stage)>,
    sources: &'a [&'a str],
    scope: Scope,
    frames: Vec<Frame>,
    deployment: bool,
    /// In a chained pipeline's `outputs`: expressions read the child pipeline, not this one.
    foreign: bool,
    /// In a `Pipeline` stage.
    chained: bool,
    out: Vec<Diagnostic>,
    refs: Vec<StageRef>,
}

/// An expression in one stage that reads another stage (`pipeline.stages.OTHER.…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRef {
    /// The stage the expression is written in.
    pub stage: String,
    /// The stage it reads.
    pub reads: String,
    /// The fully-qualified path read.
    pub path: String,
    /// Where the reference is written.
    pub span: Span,
}

/// Validate a parsed pipeline (`pipeline` is the value node of the `pipeline:` key); returns every
/// cross-stage reference found on the way.
pub fn pipeline(p: &Pipeline, node: &Node, sources: &[&str], r: &mut Reader) -> Vec<StageRef> {
    let mut order: HashMap<&str, (usize, &Stage)> = HashMap::new();
    for (gi, group) in p.stage_groups().into_iter().enumerate() {
        for s in group {
            if let Some((_, first)) = order.get(s.identifier.as_str()) {
                r.error_help(
                    s.identifier.span,
                    format!(
                        "duplicate stage identifier `{}`: stage identifiers must be unique in the pipeline",
                        s.identifier.value
                    ),
                    format!("the first stage with this identifier is at line {}", first.identifier.span.start.line),
                );
                continue;
            }
            order.insert(s.identifier.as_str(), (gi, s));
        }
    }
    for s in p.all_stages() {
        // A step's path holds the step groups around it (`steps.build_group.steps.compile`), so an identifier
        // needs to be unique only among the elements of the same list — as in Harness.
        // A stage's elements are few: a list searched in order is cheaper than hashing each key.
        let mut seen: Vec<(ElementKey<'_>, Span)> = Vec::new();
        s.spec.execution.walk(|e, groups, rollback| {
            let id = match e {
                ExecutionElement::Step(st) => &st.identifier,
                ExecutionElement::StepGroup(g) => &g.identifier,
                ExecutionElement::Parallel(_) => return,
            };
            let key = (rollback, groups.iter().map(|g| g.identifier.as_str()).collect::<Vec<_>>(), id.as_str());
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                let within = match groups.last() {
                    Some(g) => format!("step group `{}`", g.identifier.value),
                    None => format!("stage `{}`", s.identifier.value),
                };
                r.error_help(
                    id.span,
                    format!("duplicate step identifier `{}` in {within}: the steps and step groups of one list need unique identifiers", id.value),
                    format!("the first one is at line {}", first.start.line),
                );
            } else {
                seen.push((key, id.span));
            }
        });
        use_from_stage(p, s, &order, r);
    }
    for pasted in crate::inputs::pasted_inputs(node) {
        r.diags.push(crate::diag::Diagnostic::warning(pasted.span, pasted.message()).with_help(pasted.help()));
    }
    Walk::new(Some(p), &order, sources).run(node, r)
}

/// Check the expressions of an entity file (they are parsed; references are resolved when a pipeline uses it).
pub fn expressions_only(node: &Node, sources: &[&str], r: &mut Reader) {
    let none = HashMap::new();
    Walk::new(None, &none, sources).run(node, r);
}

fn use_from_stage(p: &Pipeline, s: &Stage, order: &HashMap<&str, (usize, &Stage)>, r: &mut Reader) {
    let spec = &s.spec;
    let uses = [
        ("service", spec.service.as_ref().and_then(|c| c.use_from_stage.as_ref())),
        ("environment", spec.environment.as_ref().and_then(|c| c.use_from_stage.as_ref())),
        ("serviceConfig", spec.service_config.as_ref().and_then(|c| c.use_from_stage.as_ref())),
        ("infrastructure", spec.infrastructure.as_ref().and_then(|c| c.use_from_stage.as_ref())),
        ("services", spec.services.as_ref().and_then(|c| c.use_from_stage.as_ref())),
    ];
    let me = order.get(s.identifier.as_str()).map(|(g, _)| *g).unwrap_or(usize::MAX);
    for (what, u) in uses {
        let Some(u) = u else { continue };
        let target = u.stage.as_str();
        match order.get(target) {
            None => {
                let hint = did_you_mean(target, p.all_stages().iter().map(|s| s.identifier.as_str()));
                r.error(
                    u.stage.span,
                    format!(
                        "`useFromStage` of the {what} of stage `{}` names stage `{target}`, which does not exist{hint}",
                        s.identifier.value
                    ),
                );
            }
            Some(_) if target == s.identifier.as_str() => {
                r.error(u.stage.span, format!("stage `{target}` cannot propagate its {what} from itself"));
            }
            Some((g, _)) if *g >= me => {
                let how = if *g == me { "runs in parallel with it" } else { "runs after it" };
                r.error_help(
                    u.stage.span,
                    format!("stage `{}` propagates its {what} from stage `{target}`, which {how}", s.identifier.value),
                    "`useFromStage` must name a stage that runs earlier",
                );
            }
            Some((_, t)) if t.stage_type != StageType::Deployment => {
                r.error(
                    u.stage.span,
                    format!("stage `{target}` is a {:?} stage and has no {what} to propagate", t.stage_type),
                );
            }
            // A stage's list of services may be propagated to another that lists several; one service may not.
            Some((_, t)) if what != "services" && (t.spec.services.is_some() || t.spec.environments.is_some()) => {
                r.error_help(
                    u.stage.span,
                    format!("stage `{target}` deploys several services or environments, so it has no one {what} to propagate"),
                    "name the service (`serviceRef`) and environment (`environmentRef`) here, as Harness requires",
                );
            }
            Some(_) => {}
        }
    }
}

fn find<'a>(els: &'a [ExecutionElement], id: &str) -> Option<&'a ExecutionElement> {
    for e in els {
        match e {
            ExecutionElement::Step(s) if s.identifier.value == id => return Some(e),
            ExecutionElement::StepGroup(g) if g.identifier.value == id => return Some(e),
            ExecutionElement::Parallel(inner) => {
                if let Some(f) = find(inner, id) {
                    return Some(f);
                }
            }
            _ => {}
        }
    }
    None
}

fn ids(els: &[ExecutionElement], out: &mut Vec<String>) {
    for e in els {
        match e {
            ExecutionElement::Step(s) => out.push(s.identifier.value.clone()),
            ExecutionElement::StepGroup(g) => out.push(g.identifier.value.clone()),
            ExecutionElement::Parallel(inner) => ids(inner, out),
        }
    }
}

fn outputs(s: &Step) -> Vec<&str> {
    let ov = match &s.spec {
        StepSpec::ShellScript(x) => &x.output_variables,
        StepSpec::Run(x) => &x.output_variables,
        StepSpec::Http(x) => &x.output_variables,
        _ => return Vec::new(),
    };
    ov.iter().map(|o| o.name.as_str()).collect()
}

impl<'a> Walk<'a> {
    /// The text `node`'s span points into.
    fn text(&self, node: &Node) -> &'a str {
        self.sources.get(node.span.file as usize).copied().unwrap_or_default()
    }

    /// A walk over a pipeline (`p` set: references are checked) or an entity file (`p` unset: parsed only).
    fn new(p: Option<&'a Pipeline>, order: &'a HashMap<&'a str, (usize, &'a Stage)>, sources: &'a [&'a str]) -> Self {
        // Outside a pipeline (entity files) service / env / infra expressions are at home.
        let deployment = p.is_none();
        Walk {
            p,
            order,
            sources,
            scope: Scope::default(),
            frames: Vec::new(),
            deployment,
            foreign: false,
            chained: false,
            out: Vec::new(),
            refs: Vec::new(),
        }
    }

    fn run(mut self, node: &Node, r: &mut Reader) -> Vec<StageRef> {
        let big = self.p.and(node.get("stages")).and_then(|s| match &s.yaml {
            Yaml::Seq(items) if items.len() >= crate::PARALLEL_FROM => Some(items),
            _ => None,
        });
        match (big, &node.yaml) {
            // A big pipeline's stages are walked side by side (each stage's walk is its own); results keep
            // their order.
            (Some(items), Yaml::Map(entries)) => {
                for (k, v) in entries.iter().filter(|(k, _)| k.as_scalar() != Some("stages")) {
                    self.walk(v, k.as_scalar(), None);
                }
                let (p, order, sources) = (self.p, self.order, self.sources);
                let parts = crate::in_parallel(items, |chunk| {
                    let mut w = Walk::new(p, order, sources);
                    for item in chunk {
                        w.walk(item, Some("stages"), None);
                    }
                    (w.out, w.refs)
                });
                for (out, refs) in parts {
                    self.out.extend(out);
                    self.refs.extend(refs);
                }
            }
            _ => self.walk(node, None, None),
        }
        r.diags.append(&mut self.out);
        self.refs
    }

    fn walk(&mut self, node: &Node, key: Option<&str>, parent: Option<&str>) {
        match &node.yaml {
            Yaml::Scalar(s, _) => {
                if has_expression(s) {
                    let condition = (key == Some("condition") && parent == Some("when")) || key == Some("assertion");
                    self.check_string(node, s, condition);
                }
            }
            Yaml::Seq(items) => items.iter().for_each(|i| self.walk(i, key, parent)),
            Yaml::Map(entries) => {
                for (k, v) in entries {
                    let k = k.as_scalar().unwrap_or_default();
                    match k {
                        "stage" if matches!(v.yaml, Yaml::Map(_)) => {
                            let saved =
                                (std::mem::take(&mut self.scope), self.deployment, std::mem::take(&mut self.frames));
                            self.scope =
                                Scope::stage(v.get("identifier").and_then(Node::as_scalar).unwrap_or_default());
                            let stage_type = v.get("type").and_then(Node::as_scalar);
                            self.deployment = stage_type == Some("Deployment");
                            let was_chained = self.chained;
                            self.chained = stage_type == Some("Pipeline");
                            self.push_strategy(v);
                            self.walk(v, Some(k), key);
                            (self.scope, self.deployment, self.frames) = saved;
                            self.chained = was_chained;
                        }
                        "stepGroup" | "step" if matches!(v.yaml, Yaml::Map(_)) => {
                            // Only a step group changes the scope (a step is read in its group's).
                            let saved_scope = (k == "stepGroup").then(|| {
                                let group =
                                    self.scope.group(v.get("identifier").and_then(Node::as_scalar).unwrap_or_default());
                                std::mem::replace(&mut self.scope, group)
                            });
                            let n = self.frames.len();
                            self.push_strategy(v);
                            self.walk(v, Some(k), key);
                            self.frames.truncate(n);
                            if let Some(saved) = saved_scope {
                                self.scope = saved;
                            }
                        }
                        // A chained pipeline's inputs are in its shape (its stages are not this pipeline's), but
                        // their expressions read this pipeline.
                        "inputs" if self.chained && key == Some("spec") => self.walk_values(v),
                        "outputs" if self.chained && key == Some("spec") => {
                            self.foreign = true;
                            self.walk(v, Some(k), key);
                            self.foreign = false;
                        }
                        _ => self.walk(v, Some(k), key),
                    }
                }
            }
        }
    }

    /// Check the expressions of every scalar below `node`, reading no structure.
    fn walk_values(&mut self, node: &Node) {
        match &node.yaml {
            Yaml::Scalar(s, _) if has_expression(s) => self.check_string(node, s, false),
            Yaml::Scalar(..) => {}
            Yaml::Seq(items) => items.iter().for_each(|i| self.walk_values(i)),
            Yaml::Map(entries) => entries.iter().for_each(|(_, v)| self.walk_values(v)),
        }
    }

    fn push_strategy(&mut self, node: &Node) {
        let Some(s) = node.get("strategy") else { return };
        if let Some(n) = written_iterations(s)
            && n > crate::MAX_ITERATIONS as u128
        {
            self.out.push(
                Diagnostic::error(
                    s.span,
                    format!(
                        "this looping strategy has {n} iterations, more than the {} a node may have",
                        crate::MAX_ITERATIONS
                    ),
                )
                .with_help("use fewer values, or split the work into several stages"),
            );
        }
        if let Some(m) = s.get("matrix") {
            let axes = match &m.yaml {
                Yaml::Map(e) => e
                    .iter()
                    .filter_map(|(k, _)| k.as_scalar())
                    .filter(|k| !matches!(*k, "exclude" | "maxConcurrency" | "nodeName"))
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            };
            self.frames.push(Frame::Matrix(axes));
        } else if let Some(r) = s.get("repeat") {
            self.frames.push(Frame::Repeat { items: r.get("items").is_some() });
        } else if s.get("parallelism").is_some() {
            self.frames.push(Frame::Parallelism);
        }
    }

    fn diag(&mut self, node: &Node, range: std::ops::Range<usize>, sev: Severity, msg: String, help: Option<String>) {
        let start = node.pos_in_scalar(range.start, self.text(node));
        let end = node.pos_in_scalar(range.end, self.text(node));
        let span = if end.line == start.line && end.col > start.col {
            Span { start, end, file: node.span.file }
        } else {
            Span { file: node.span.file, ..Span::at(start, 1) }
        };
        let mut d = Diagnostic { severity: sev, span, message: msg, help: None };
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.out.push(d);
    }

    fn check_string(&mut self, node: &Node, s: &str, condition: bool) {
        let exprs: Vec<expr::Expr> = if condition && !s.trim_start().starts_with("<+input>") {
            match expr::parse_condition(s) {
                Ok(e) => vec![e],
                Err(e) => {
                    let at = e.offset;
                    self.diag(
                        node,
                        at..at + 1,
                        Severity::Error,
                        format!("invalid condition: {}", e.message),
                        Some("a condition is an expression such as `<+pipeline.variables.env> == \"prod\"`; strings are quoted, and `&&`, `||`, `!` combine".into()),
                    );
                    return;
                }
            }
        } else {
            match expr::parse_template(s) {
                Ok(t) => t.expressions().cloned().collect(),
                Err(e) => {
                    let at = e.offset;
                    let what = if s.get(at..).is_some_and(|t| t.starts_with("<+input>"))
                        || e.message.contains("runtime input")
                    {
                        "invalid runtime input"
                    } else {
                        "invalid expression"
                    };
                    let help = if what == "invalid runtime input" {
                        "a runtime input is the whole value: `<+input>`, optionally `.default(x)`, `.allowedValues(a,b)`, `.regex(re)`, `.executionInput()`"
                    } else {
                        "an expression is `<+path.to.value>` or `<+a == b>`; inside `<+ … >` the first `>` closes it, so write comparisons as `gt` / `ge` or in parentheses"
                    };
                    self.diag(node, at..at + 1, Severity::Error, format!("{what}: {}", e.message), Some(help.into()));
                    return;
                }
            }
        };
        for e in &exprs {
            for (range, lit) in status_comparisons(e) {
                if !STATUS_VALUES.contains(&lit.as_str()) {
                    let meant = status_meant(&lit).map(|m| format!("write `\"{m}\"`; ")).unwrap_or_default();
                    self.diag(
                        node,
                        range,
                        Severity::Warning,
                        format!(
                            "a status is never `{lit}` in an expression, so this comparison never matches as written"
                        ),
                        Some(format!("{meant}statuses in expressions are {}", STATUS_VALUES.join(", "))),
                    );
                }
            }
        }
        if self.p.is_none() || self.foreign {
            return;
        }
        for e in &exprs {
            for r in expr::references(e, &self.scope) {
                if let Err((sev, msg, help)) = self.check_ref(&r) {
                    self.diag(node, r.span.clone(), sev, msg, help);
                }
                if let (Some(cur), Some(read)) = (&self.scope.stage, r.stage())
                    && cur != read
                {
                    let start = node.pos_in_scalar(r.span.start, self.text(node));
                    let end = node.pos_in_scalar(r.span.end, self.text(node));
                    let span = if end.line == start.line {
                        Span { start, end, file: node.span.file }
                    } else {
                        Span { file: node.span.file, ..Span::at(start, 1) }
                    };
                    self.refs.push(StageRef {
                        stage: cur.clone(),
                        reads: read.to_string(),
                        path: r.path.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn check_ref(&self, r: &Reference) -> Result<(), (Severity, String, Option<String>)> {
        let err = |m: String| Err((Severity::Error, m, None));
        let warn = |m: String| Err((Severity::Warning, m, None));
        let p = self.p.expect("checked by caller");
        let root = r.root();
        match root {
            "pipeline" => match r.segments.get(1).map(String::as_str) {
                None => Ok(()),
                Some("variables") => match r.segments.get(2) {
                    Some(v) if !p.variables.iter().any(|x| x.name.value == *v) => {
                        let hint = did_you_mean(v, p.variables.iter().map(|x| x.name.as_str()));
                        err(format!("<+{}> references pipeline variable `{v}`, which is not defined{hint}", r.written))
                    }
                    _ => Ok(()),
                },
                Some("stages") => self.check_stage_path(r, &self.scope),
                Some(f) if PIPELINE_FIELDS.contains(&f) => Ok(()),
                Some(f) => {
                    let hint = did_you_mean(f, PIPELINE_FIELDS.iter().copied());
                    warn(format!("<+{}>: `pipeline.{f}` is not a pipeline field pipewright knows{hint}", r.written))
                }
            },
            "stage" | "execution" | "steps" | "stepGroup" => {
                if self.scope.stage.is_none() {
                    return err(format!(
                        "<+{}> is relative to a stage, but it is used outside any stage; write the full path `pipeline.stages.STAGE.…`",
                        r.written
                    ));
                }
                if root == "stepGroup" && self.scope.groups.is_empty() {
                    return err(format!("<+{}> is used outside any step group", r.written));
                }
                // Relative step paths are looked up in the innermost step group first, then outwards.
                let mut scope = self.scope.clone();
                loop {
                    let written: Vec<String> = r.written.split('.').map(String::from).collect();
                    let segs = expr::resolve_path(&written, &scope);
                    let rr = Reference { path: segs.join("."), segments: segs, ..r.clone() };
                    match self.check_stage_path(&rr, &scope) {
                        Err(e) if root == "steps" && !scope.groups.is_empty() => {
                            scope.groups.pop();
                            if scope.groups.is_empty() {
                                // Last try at stage level.
                                let segs = expr::resolve_path(&written, &scope);
                                let rr = Reference { path: segs.join("."), segments: segs, ..r.clone() };
                                return self.check_stage_path(&rr, &scope).or(Err(e));
                            }
                        }
                        other => return other,
                    }
                }
            }
            "matrix" => {
                let axes: Vec<&str> = self
                    .frames
                    .iter()
                    .filter_map(|f| match f {
                        Frame::Matrix(a) => Some(a.iter().map(String::as_str)),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if !self.frames.iter().any(|f| matches!(f, Frame::Matrix(_))) {
                    return err(format!("<+{}> is used outside a matrix strategy", r.written));
                }
                match r.segments.get(1) {
                    Some(a) if !axes.contains(&a.as_str()) => {
                        let hint = did_you_mean(a, axes.iter().copied());
                        err(format!("<+{}>: the matrix has no axis `{a}`{hint}; axes: {}", r.written, axes.join(", ")))
                    }
                    _ => Ok(()),
                }
            }
            "repeat" => match self.frames.iter().rev().find(|f| matches!(f, Frame::Repeat { .. })) {
                None => err(format!("<+{}> is used outside a repeat strategy", r.written)),
                Some(Frame::Repeat { items: false }) if r.segments.get(1).map(String::as_str) == Some("item") => {
                    err(format!(
                        "<+{}>: this repeat strategy uses `times`, so there is no item; use `items: [...]` or <+strategy.iteration>",
                        r.written
                    ))
                }
                _ => Ok(()),
            },
            "strategy" => {
                if self.frames.is_empty() {
                    return err(format!(
                        "<+{}> is used outside a looping strategy (matrix, repeat or parallelism)",
                        r.written
                    ));
                }
                match r.segments.get(1) {
                    Some(f) if !STRATEGY_FIELDS.contains(&f.as_str()) => {
                        let hint = did_you_mean(f, STRATEGY_FIELDS.iter().copied());
                        warn(format!("<+{}>: `strategy.{f}` is not a strategy field{hint}", r.written))
                    }
                    _ => Ok(()),
                }
            }
            _ if DEPLOY_ROOTS.contains(&root) => {
                if self.deployment {
                    Ok(())
                } else {
                    warn(format!("<+{}>: `{root}` is only set in Deployment stages", r.written))
                }
            }
            _ if CONTEXT_ROOTS.contains(&root) || root.starts_with("HARNESS_") => Ok(()),
            _ => {
                let known = ["pipeline", "stage", "steps", "execution", "matrix", "repeat", "strategy"]
                    .into_iter()
                    .chain(DEPLOY_ROOTS.iter().copied())
                    .chain(CONTEXT_ROOTS.iter().copied());
                let hint = did_you_mean(root, known);
                warn(format!("<+{}>: unknown expression root `{root}`{hint}", r.written))
            }
        }
    }

    fn check_stage_path(&self, r: &Reference, scope: &Scope) -> Result<(), (Severity, String, Option<String>)> {
        let err = |m: String, h: Option<String>| Err((Severity::Error, m, h));
        let segs = &r.segments;
        let Some(sid) = segs.get(2) else { return Ok(()) };
        let Some((group, stage)) = self.order.get(sid.as_str()) else {
            let p = self.p.expect("checked by caller");
            let hint = did_you_mean(sid, p.all_stages().iter().map(|s| s.identifier.as_str()));
            return err(format!("<+{}> references stage `{sid}`, which does not exist{hint}", r.written), None);
        };
        if let Some(cur) = &scope.stage
            && cur != sid
            && let Some((cg, _)) = self.order.get(cur.as_str())
            && group >= cg
        {
            let how = if group == cg { "runs in parallel with" } else { "runs after" };
            return err(
                format!("<+{}> in stage `{cur}` reads stage `{sid}`, which {how} it", r.written),
                Some("a stage can only read stages that run before it; move the stage or the expression".into()),
            );
        }
        match segs.get(3).map(String::as_str) {
            Some("output") if stage.stage_type == StageType::Pipeline => {
                let names: Vec<&str> =
                    stage.spec.chained.iter().flat_map(|c| c.outputs.iter().map(|o| o.name.as_str())).collect();
                match segs.get(4) {
                    Some(v) if !names.contains(&v.as_str()) => {
                        let hint = did_you_mean(v, names.iter().copied());
                        err(
                            format!(
                                "<+{}> references output `{v}` of stage `{sid}`, which its `outputs` do not list{hint}",
                                r.written
                            ),
                            Some(format!(
                                "add `- name: {v}` with the child pipeline's expression to the stage's `outputs`"
                            )),
                        )
                    }
                    _ => Ok(()),
                }
            }
            Some("variables") => match segs.get(4) {
                Some(v) if !stage.variables.iter().any(|x| x.name.value == *v) => {
                    let hint = did_you_mean(v, stage.variables.iter().map(|x| x.name.as_str()));
                    err(
                        format!(
                            "<+{}> references variable `{v}` of stage `{sid}`, which is not defined{hint}",
                            r.written
                        ),
                        None,
                    )
                }
                _ => Ok(()),
            },
            Some("spec") if segs.get(4).map(String::as_str) == Some("execution") => {
                let (mut list, mut i) = match segs.get(5).map(String::as_str) {
                    Some("steps") => (&stage.spec.execution.steps, 6),
                    Some("rollbackSteps") => (&stage.spec.execution.rollback_steps, 6),
                    _ => return Ok(()),
                };
                loop {
                    let Some(id) = segs.get(i) else { return Ok(()) };
                    let Some(found) = find(list, id) else {
                        let mut all = Vec::new();
                        ids(list, &mut all);
                        let hint = did_you_mean(id, all.iter().map(String::as_str));
                        return err(
                            format!(
                                "<+{}> references step `{id}`, which does not exist in stage `{sid}`{hint}",
                                r.written
                            ),
                            None,
                        );
                    };
                    match found {
                        ExecutionElement::StepGroup(g) if segs.get(i + 1).map(String::as_str) == Some("steps") => {
                            list = &g.steps;
                            i += 2;
                        }
                        ExecutionElement::Step(st) => {
                            // A step of a type pipewright does not run itself has the outputs its handler (or
                            // Harness) gives: they cannot be known here.
                            if segs.get(i + 1).map(String::as_str) == Some("output")
                                && segs.get(i + 2).map(String::as_str) == Some("outputVariables")
                                && let Some(v) = segs.get(i + 3)
                                && !matches!(st.spec, StepSpec::Harness(_))
                            {
                                let outs = outputs(st);
                                if !outs.contains(&v.as_str()) {
                                    let hint = did_you_mean(v, outs.iter().copied());
                                    let declared = if outs.is_empty() {
                                        "declares no output variables".to_string()
                                    } else {
                                        format!("declares {}", outs.join(", "))
                                    };
                                    return err(
                                        format!(
                                            "<+{}> references output variable `{v}` of step `{id}`, which {declared}{hint}",
                                            r.written
                                        ),
                                        Some(format!("add `{v}` to the step's `outputVariables`")),
                                    );
                                }
                            }
                            return Ok(());
                        }
                        _ => return Ok(()),
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

/// How many iterations a strategy's written values count (a matrix's axes multiplied before `exclude`; axes
/// given by an expression count one, since their values are known only when it runs).
fn written_iterations(strategy: &Node) -> Option<u128> {
    let int = |n: &Node| n.as_scalar().and_then(|v| v.trim().parse::<u128>().ok());
    let len = |n: &Node| match &n.yaml {
        Yaml::Seq(items) => items.len() as u128,
        _ => 1,
    };
    if let Some(m) = strategy.get("matrix") {
        let Yaml::Map(entries) = &m.yaml else { return None };
        let axes = entries
            .iter()
            .filter(|(k, _)| !matches!(k.as_scalar(), Some("exclude" | "maxConcurrency" | "nodeName")))
            .fold(1u128, |n, (_, v)| n.saturating_mul(len(v)));
        return Some(axes);
    }
    if let Some(r) = strategy.get("repeat") {
        return r.get("items").map(len).or_else(|| r.get("times").and_then(int));
    }
    strategy.get("parallelism").and_then(int)
}
