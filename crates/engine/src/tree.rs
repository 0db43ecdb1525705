//! The expression context of a running execution: one value tree (`pipeline.…` with every stage's status,
//! variables and step outputs as they become known) plus, per node, a layer of local values (`matrix`,
//! `strategy`, `repeat`, `service`, `env`, `infra`, `httpResponse…`). Relative paths resolve against the
//! node's scope exactly as static analysis resolves them.

use crate::Secrets;
use crate::logs::Masker;
use expr::{Context, PathSeg, Scope, Value};
use std::collections::BTreeMap;

/// Set `value` at `path` in `root`, creating maps on the way.
pub fn set(root: &mut Value, path: &[&str], value: Value) {
    let mut cur = root;
    for seg in path {
        if !matches!(cur, Value::Map(_)) {
            *cur = Value::Map(BTreeMap::new());
        }
        let Value::Map(m) = cur else { unreachable!("made a map above") };
        cur = m.entry((*seg).to_string()).or_insert(Value::Null);
    }
    *cur = value;
}

/// The value at `path`.
pub fn get<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = root;
    for seg in path {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// The context one node evaluates in.
pub struct NodeCtx<'a> {
    /// The execution's tree.
    pub global: &'a Value,
    /// Local values by root name.
    pub local: &'a BTreeMap<String, Value>,
    /// Where the node sits.
    pub scope: &'a Scope,
    /// Secrets.
    pub secrets: &'a Secrets,
    /// Secrets read are masked from then on.
    pub masker: &'a Masker,
}

impl Context for NodeCtx<'_> {
    fn lookup(&self, path: &[PathSeg]) -> Option<Value> {
        let written: Vec<String> = path.iter().map(ToString::to_string).collect();
        let first = written.first()?;
        if let Some(v) = self.local.get(first.as_str()) {
            return get(v, &written[1..]).cloned();
        }
        let full = expr::resolve_path(&written, self.scope);
        match get(self.global, &full) {
            Some(v) => Some(v.clone()),
            // What a trigger or a checkout would give reads as null where there is none (a manual run, no git
            // checkout), as in Harness, rather than failing the node.
            None if matches!(first.as_str(), "trigger" | "codebase" | "eventPayload") => Some(Value::Null),
            None => None,
        }
    }

    fn secret(&self, id: &str) -> Option<String> {
        let v = self.secrets.get(id)?;
        self.masker.add(&v);
        Some(v)
    }
}

impl NodeCtx<'_> {
    /// Render a string field: its expressions evaluated, the result final.
    pub fn render(&self, s: &str) -> Result<String, String> {
        let t = expr::parse_template(s).map_err(|e| format!("invalid expression in `{s}`: {e}"))?;
        if t.is_literal() {
            return Ok(s.to_string());
        }
        expr::render(&t, self).map_err(|e| e.to_string())
    }

    /// Every string of a JSON value (a step's `spec`, a chained pipeline's `inputs`) rendered; `at` names the
    /// value in errors (`spec.fields[0].value: …`).
    pub fn render_json(&self, v: &serde_json::Value, at: &str) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) if s.contains("<+") => J::String(self.render(s).map_err(|e| format!("{at}: {e}"))?),
            J::Array(items) => J::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.render_json(x, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(m) => J::Object(
                m.iter()
                    .map(|(k, x)| self.render_json(x, &format!("{at}.{k}")).map(|x| (k.clone(), x)))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluate a condition.
    pub fn condition(&self, s: &str) -> Result<bool, String> {
        expr::evaluate_condition(s, self).map_err(|e| format!("condition `{s}`: {e}"))
    }
}
