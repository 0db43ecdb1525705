//! Static reference extraction: every path an expression reads, with the relative forms Harness offers
//! (`stage.…`, `execution.steps.…`, `steps.…`, `stepGroup.…`) resolved to fully-qualified `pipeline.…` paths
//! against the stage and step groups the expression sits in. This is what stage dependencies are computed from.

use crate::ast::{Expr, ExprKind, PathSeg, path_to_string};
use crate::template::{Segment, Template};
use std::ops::Range;

/// Where an expression sits: the stage and the chain of step groups (outermost first) around it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The enclosing stage's identifier, if any.
    pub stage: Option<String>,
    /// Enclosing step groups, outermost first.
    pub groups: Vec<String>,
}

impl Scope {
    /// A scope inside stage `id`.
    pub fn stage(id: impl Into<String>) -> Self {
        Scope { stage: Some(id.into()), ..Scope::default() }
    }

    /// This scope, one step group deeper.
    pub fn group(&self, id: impl Into<String>) -> Self {
        let mut s = self.clone();
        s.groups.push(id.into());
        s
    }
}

/// One path an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path as written, e.g. `steps.compile.output.outputVariables.artifact`.
    pub written: String,
    /// The fully-qualified path, e.g. `pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact`.
    pub path: String,
    /// The resolved path's segments.
    pub segments: Vec<String>,
    /// Byte range of the reference in the source string.
    pub span: Range<usize>,
}

impl Reference {
    /// The stage this reference reads from, when it reads `pipeline.stages.S.…`.
    pub fn stage(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [p, s, id, ..] if p == "pipeline" && s == "stages" => Some(id),
            _ => None,
        }
    }

    /// The first segment of the path as written (`pipeline`, `stage`, `matrix`, `secrets`, …).
    pub fn root(&self) -> &str {
        self.written.split(['.', '[']).next().unwrap_or_default()
    }
}

fn seg_strings(segs: &[PathSeg]) -> Vec<String> {
    segs.iter()
        .map(|s| match s {
            PathSeg::Name(_) | PathSeg::Spliced { .. } => s.static_name(),
            PathSeg::Index(i) => i.to_string(),
        })
        .collect()
}

/// Resolve a path as written against a scope. Fully-qualified and context paths (`matrix.os`, `env.name`, …)
/// come back unchanged; relative stage / step paths become `pipeline.stages.…`.
pub fn resolve_path(written: &[String], scope: &Scope) -> Vec<String> {
    let stage_prefix = |rest: &[String]| -> Vec<String> {
        let mut v = vec!["pipeline".to_string(), "stages".to_string()];
        v.push(scope.stage.clone().unwrap_or_default());
        v.extend_from_slice(rest);
        v
    };
    if scope.stage.is_none() {
        return written.to_vec();
    }
    match written.first().map(String::as_str) {
        Some("stage") => stage_prefix(&written[1..]),
        Some("execution") => {
            let mut v = stage_prefix(&["spec".to_string()]);
            v.extend_from_slice(written);
            v
        }
        Some("steps") => {
            let mut v = stage_prefix(&["spec".to_string(), "execution".to_string()]);
            for g in &scope.groups {
                v.push("steps".to_string());
                v.push(g.clone());
            }
            v.extend_from_slice(written);
            v
        }
        Some("stepGroup") if !scope.groups.is_empty() => {
            let mut v = stage_prefix(&["spec".to_string(), "execution".to_string()]);
            for g in &scope.groups {
                v.push("steps".to_string());
                v.push(g.clone());
            }
            v.extend_from_slice(&written[1..]);
            v
        }
        _ => written.to_vec(),
    }
}

/// Every reference an expression reads, in source order. Method names are not part of a path
/// (`pipeline.variables.x.toUpperCase()` reads `pipeline.variables.x`); `secrets.getValue("id")` is reported as
/// the path `secrets.id`.
pub fn references(expr: &Expr, scope: &Scope) -> Vec<Reference> {
    let mut out = Vec::new();
    expr.walk(&mut |e| match &e.kind {
        ExprKind::Path(segs) => {
            let written = seg_strings(segs);
            let segments = resolve_path(&written, scope);
            out.push(Reference {
                written: path_to_string(segs),
                path: segments.join("."),
                segments,
                span: e.span.clone(),
            });
        }
        ExprKind::Call { target, method, args } if method == "getValue" => {
            if let (ExprKind::Path(t), [arg]) = (&target.kind, args.as_slice())
                && t.len() == 1
                && t[0] == PathSeg::Name("secrets".into())
                && let ExprKind::Literal(crate::Value::String(id)) = &arg.kind
            {
                out.push(Reference {
                    written: format!("secrets.getValue(\"{id}\")"),
                    path: format!("secrets.{id}"),
                    segments: vec!["secrets".into(), id.clone()],
                    span: e.span.clone(),
                });
            }
        }
        _ => {}
    });
    // Namespace calls (`secrets.getValue(…)`, `json.object(…)`) also walk their bare namespace path: drop it.
    out.retain(|r| r.written != "secrets" && r.written != "json");
    out
}

impl Template {
    /// Every reference read by every expression segment of the template.
    pub fn references(&self, scope: &Scope) -> Vec<Reference> {
        let mut out = Vec::new();
        for s in &self.segments {
            if let Segment::Expr(e, _) = s {
                out.extend(references(e, scope));
            }
        }
        out
    }
}
