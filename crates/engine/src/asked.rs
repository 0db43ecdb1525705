//! Runtime inputs asked while an execution runs (`<+input>.executionInput()`): how they are kept in the
//! execution's `inputs` (recorded as asked at launch, marked waiting when the run reaches the stage or step
//! they belong to, then given), and the pure check of values a person gives — the same check, with the same
//! words, for the CLI, the API, the web UI and the engine.

use expr::RuntimeInput;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

/// The `source` of an asked input's entry.
pub const SOURCE: &str = "ExecutionInput";

/// An input the run asks for when it reaches `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The field's fully-qualified path.
    pub path: String,
    /// The stage, step group or step (or `pipeline`) it belongs to, as a YAML path.
    pub owner: String,
    /// Its constraints.
    pub input: RuntimeInput,
}

/// An input waiting for a value now: the node asking (`pipeline` for the pipeline's own fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The field's path.
    pub path: String,
    /// The id of the node that asks (the execution's id for the pipeline's own fields).
    pub node_id: String,
    /// That node's path (`pipeline` for the pipeline's own fields).
    pub node: String,
    /// Its constraints.
    pub input: RuntimeInput,
}

/// The entry recorded at launch for an input the run will ask for.
pub fn entry(path: &str, owner: &str, input: &RuntimeInput) -> (String, Json) {
    (path.to_string(), json!({"source": SOURCE, "pending": true, "owner": owner, "input": input}))
}

/// The entry once the run has reached its node and waits for it.
pub fn waiting_entry(a: &Asked, node_id: &str, node: &str) -> Json {
    json!({"source": SOURCE, "pending": true, "owner": a.owner, "input": a.input, "node_id": node_id, "node": node})
}

/// The entry once it is given.
pub fn given_entry(value: &str, by: &str, node: &str) -> Json {
    json!({"source": SOURCE, "value": value, "by": by, "node": node})
}

/// What an execution's `inputs` say: the inputs still to be asked or waiting, and the values given so far.
pub fn read(inputs: &Json) -> (Vec<Asked>, BTreeMap<String, String>) {
    let mut asked = Vec::new();
    let mut given = BTreeMap::new();
    for (path, v) in inputs.as_object().into_iter().flatten() {
        if v["source"] != SOURCE {
            continue;
        }
        if let Some(value) = v["value"].as_str() {
            given.insert(path.clone(), value.to_string());
        } else if let (Some(owner), Ok(input)) =
            (v["owner"].as_str(), serde_json::from_value::<RuntimeInput>(v["input"].clone()))
        {
            asked.push(Asked { path: path.clone(), owner: owner.to_string(), input });
        }
    }
    (asked, given)
}

/// The inputs an execution waits for now.
pub fn waiting(inputs: &Json) -> Vec<Waiting> {
    inputs
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v["source"] == SOURCE && v["value"].is_null())
        .filter_map(|(path, v)| {
            Some(Waiting {
                path: path.clone(),
                node_id: v["node_id"].as_str()?.to_string(),
                node: v["node"].as_str()?.to_string(),
                input: serde_json::from_value(v["input"].clone()).ok()?,
            })
        })
        .collect()
}

/// A value that cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The path given.
    pub path: String,
    /// Why.
    pub message: String,
}

/// Check values a person gives against what an execution waits for: each path must be waiting now and each
/// value must pass its input's `.allowedValues` / `.regex`. Returns the values grouped by the node that asks
/// for them, or every problem at once.
pub fn check(
    inputs: &Json,
    values: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Vec<Refused>> {
    let waiting = waiting(inputs);
    let (later, given) = read(inputs);
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let refuse = |path: &str, message: String| Refused { path: path.to_string(), message };
    if values.is_empty() {
        problems.push(refuse("", "no value given: give one with --input PATH=VALUE".into()));
    }
    for (path, value) in values {
        if let Some(w) = waiting.iter().find(|w| &w.path == path) {
            match w.input.check(value) {
                Ok(()) => {
                    out.entry(w.node_id.clone()).or_default().insert(path.clone(), value.clone());
                }
                Err(e) => problems.push(refuse(path, e.to_string())),
            }
        } else if given.contains_key(path) {
            problems.push(refuse(path, "was given already".into()));
        } else if let Some(a) = later.iter().find(|a| &a.path == path) {
            problems.push(refuse(path, format!("is not asked yet: the run asks for it when it reaches `{}`", a.owner)));
        } else {
            let names: Vec<&str> = waiting.iter().map(|w| w.path.as_str()).collect();
            let now = if names.is_empty() {
                "nothing is waiting for a value".to_string()
            } else {
                format!("waiting: {}", names.join(", "))
            };
            let all = names.iter().copied().chain(later.iter().map(|a| a.path.as_str()));
            let hint = spec::did_you_mean(path, all);
            problems.push(refuse(path, format!("is not an input this execution waits for ({now}){hint}")));
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// How an input is described to the person asked: its constraints, in words.
pub fn describe(i: &RuntimeInput) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &i.allowed_values {
        parts.push(format!("one of {}", a.join(", ")));
    }
    if let Some(r) = &i.regex {
        parts.push(format!("matching {r}"));
    }
    if let Some(d) = &i.default {
        parts.push(format!("default {d}"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Json {
        let version = RuntimeInput { regex: Some("v[0-9]+".into()), execution_input: true, ..Default::default() };
        let region = RuntimeInput {
            allowed_values: Some(vec!["eu".into(), "us".into()]),
            execution_input: true,
            ..Default::default()
        };
        let a = Asked { path: "pipeline.variables.version".into(), owner: "pipeline".into(), input: version };
        let later = Asked {
            path: "pipeline.stages.deploy.variables.region".into(),
            owner: "pipeline.stages.deploy".into(),
            input: region,
        };
        json!({
            "pipeline.variables.version": waiting_entry(&a, "E1", "pipeline"),
            "pipeline.stages.deploy.variables.region": entry(&later.path, &later.owner, &later.input).1,
            "pipeline.stages.build.variables.flags": given_entry("-O2", "ana", "build"),
            "pipeline.variables.team": {"value": "core", "source": "Given"},
        })
    }

    #[test]
    fn read_splits_asked_from_given() {
        let (asked, given) = read(&inputs());
        let paths: Vec<&str> = asked.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["pipeline.variables.version", "pipeline.stages.deploy.variables.region"]);
        assert_eq!(given, BTreeMap::from([("pipeline.stages.build.variables.flags".into(), "-O2".into())]));
        assert_eq!(waiting(&inputs()).len(), 1);
    }

    /// Values given, and the node they go to or the start of the first problem.
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<&'a str, &'a str>);

    #[test]
    fn check_table() {
        let cases: &[Case<'_>] = &[
            (&[("pipeline.variables.version", "v7")], Ok("E1")),
            (&[("pipeline.variables.version", "7")], Err("does not match")),
            (
                &[("pipeline.stages.deploy.variables.region", "eu")],
                Err("is not asked yet: the run asks for it when it reaches `pipeline.stages.deploy`"),
            ),
            (&[("pipeline.stages.build.variables.flags", "-O3")], Err("was given already")),
            (
                &[("pipeline.variables.verison", "v1")],
                Err("is not an input this execution waits for (waiting: pipeline.variables.version)"),
            ),
            (&[("pipeline.variables.team", "x")], Err("is not an input this execution waits for")),
            (&[], Err("no value given")),
        ];
        for (given, want) in cases {
            let values: BTreeMap<String, String> = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            match (check(&inputs(), &values), want) {
                (Ok(by_node), Ok(node)) => assert!(by_node.contains_key(*node), "{given:?}: {by_node:?}"),
                (Err(p), Err(msg)) => assert!(p[0].message.contains(msg), "{given:?}: {p:?}"),
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
