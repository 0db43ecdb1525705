//! Runtime inputs by path. Every field of a pipeline has a fully-qualified path as Harness writes it
//! (`pipeline.variables.version`, `pipeline.stages.deploy.variables.replicas`,
//! `pipeline.stages.build.spec.execution.steps.compile.timeout`); this module finds the fields that are
//! `<+input>`s, reads input-set files into path → value maps (overlays: later wins), and applies values to a
//! pipeline, checking `.allowedValues` / `.regex` and using `.default` — all before anything runs. A supplied
//! value is data: if it contains `<+`, it is wrapped as a string literal so it is never evaluated.

use crate::diag::Span;
use crate::yaml::{Node, Style, Yaml};
use expr::RuntimeInput;
use std::collections::BTreeMap;

/// A field whose value is given at run time.
#[derive(Debug, Clone)]
pub struct InputField {
    /// Its fully-qualified path.
    pub path: String,
    /// The marker's constraints.
    pub input: RuntimeInput,
    /// Where it is.
    pub span: Span,
    /// The stage it sits in, if any.
    pub stage: Option<String>,
    /// The path of the innermost stage, step group or step it belongs to (`pipeline` for the pipeline's own
    /// fields): where the run asks for it when it is an `.executionInput()`.
    pub owner: String,
}

/// Where a supplied value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum InputSource {
    /// `--input PATH=VALUE` (or the API).
    Given,
    /// An input set file.
    InputSet(String),
    /// The marker's `.default(…)`.
    Default,
    /// Given while the execution ran, when it asked (`.executionInput()`).
    ExecutionInput,
}

/// A runtime input that could not be satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// The path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// It has no value yet (nothing else is wrong with it): a preview lists it, a run refuses to start.
    pub missing: bool,
}

/// A list item's key in paths: its `name` (variables, environment variables, headers); other items (an
/// infrastructure definition, a service of `services.values`) are keyed by position, so that a pipeline whose
/// item is `- identifier: <+input>` and an input set that gives `- identifier: prod` address the same field.
fn item_key(item: &Node) -> Option<&str> {
    item.get("name").and_then(Node::as_scalar).filter(|k| !k.contains("<+"))
}

/// Visit every scalar of a pipeline-shaped tree with its fully-qualified path and enclosing stage.
pub fn walk_paths<'n>(
    node: &'n Node,
    path: &str,
    stage: Option<&str>,
    f: &mut dyn FnMut(&str, Option<&str>, &'n Node),
) {
    walk(node, path, stage, path, false, &mut |path, stage, _, n| f(path, stage, n));
}

/// What [`walk`] calls per scalar: its path, its stage, its owner (see [`InputField::owner`]), the scalar.
type Visit<'f, 'n> = &'f mut dyn FnMut(&str, Option<&str>, &str, &'n Node);

/// [`walk_paths`], also telling the path of the innermost stage, step group or step a scalar belongs to.
fn walk<'n>(node: &'n Node, path: &str, stage: Option<&str>, owner: &str, containers: bool, f: Visit<'_, 'n>) {
    if containers && !matches!(node.yaml, Yaml::Scalar(..)) {
        f(path, stage, owner, node);
    }
    match &node.yaml {
        Yaml::Scalar(..) => f(path, stage, owner, node),
        Yaml::Map(entries) => {
            for (k, v) in entries {
                let key = k.as_scalar().unwrap_or_default();
                // An input set for a templated pipeline gives the template's inputs where the reference is
                // (`stage: {identifier, template: {templateInputs: …}}`); they are the resolved element's.
                if key == "template"
                    && let Some(inputs) = v.get("templateInputs")
                {
                    walk(inputs, path, stage, owner, containers, f);
                    continue;
                }
                walk(v, &format!("{path}.{key}"), stage, owner, containers, f);
            }
        }
        Yaml::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Yaml::Map(entries) = &item.yaml
                    && let [(k, inner)] = entries.as_slice()
                {
                    match k.as_scalar() {
                        Some("parallel") => {
                            walk(inner, path, stage, owner, containers, f);
                            continue;
                        }
                        Some(kind @ ("stage" | "step" | "stepGroup")) => {
                            let id = inner.get("identifier").and_then(Node::as_scalar).unwrap_or("?");
                            let stage = if kind == "stage" { Some(id) } else { stage };
                            let here = format!("{path}.{id}");
                            walk(inner, &here, stage, &here, containers, f);
                            continue;
                        }
                        _ => {}
                    }
                }
                let is_variable = path.ends_with(".variables");
                match (item_key(item), is_variable) {
                    // A variable's path is the variable itself: its value is what inputs address.
                    (Some(name), true) => {
                        if let Some(v) = item.get("value") {
                            walk(v, &format!("{path}.{name}"), stage, owner, containers, f);
                        }
                    }
                    (Some(key), false) => walk(item, &format!("{path}.{key}"), stage, owner, containers, f),
                    (None, _) => walk(item, &format!("{path}.{i}"), stage, owner, containers, f),
                }
            }
        }
    }
}

/// Every runtime-input field of a pipeline (`node` is the value of the `pipeline:` key).
pub fn runtime_inputs(node: &Node) -> Vec<InputField> {
    let mut out = Vec::new();
    walk(node, "pipeline", None, "pipeline", false, &mut |path, stage, owner, n| {
        if let Some(s) = n.as_scalar()
            && let Ok(Some(input)) = expr::parse_runtime_input(s)
        {
            out.push(InputField {
                path: path.to_string(),
                input,
                span: n.span,
                stage: stage.map(String::from),
                owner: owner.to_string(),
            });
        }
    });
    out
}

/// The environment variable a runtime input's value is also given to every step as:
/// `PIPEWRIGHT_INPUT_` and its path upper-cased, every character but letters and digits as `_`
/// (`pipeline.variables.version` → `PIPEWRIGHT_INPUT_PIPELINE_VARIABLES_VERSION`).
pub fn input_env_name(path: &str) -> String {
    let mut name = String::from("PIPEWRIGHT_INPUT_");
    name.extend(path.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    name
}

/// A runtime input without `.allowedValues` or `.regex` whose value becomes a script's text: whoever runs
/// the pipeline writes code into it (`$(…)`, `; …`), which also prints secrets past the mask.
#[derive(Debug, Clone, PartialEq)]
pub struct PastedInput {
    /// The input's path.
    pub input: String,
    /// The script's path.
    pub script: String,
    /// The script (or the input itself, when it is the script).
    pub span: Span,
}

impl PastedInput {
    /// What a warning about it says.
    pub fn message(&self) -> String {
        if self.input == self.script {
            format!(
                "`{}` is a whole script given at run time: whoever runs the pipeline writes the code it runs",
                self.input
            )
        } else {
            format!(
                "runtime input `{}` is pasted into the script `{}`: a value with `$(…)` or `; …` runs as code, and \
                 can print secrets past the mask",
                self.input, self.script
            )
        }
    }

    /// How to fix it.
    pub fn help(&self) -> String {
        format!(
            "give the input `.allowedValues(…)` or `.regex(…)`, or read it in the script as \
             \"${}\" (every runtime input is also in the step's environment), in double quotes",
            input_env_name(&self.input)
        )
    }
}

/// The runtime inputs without `.allowedValues` or `.regex` that become scripts' text: an input that is a
/// step's script or command itself, or a variable given at run time that a script reads through
/// `<+pipeline.variables.X>` (or, in its own stage, `<+stage.variables.X>`). `node` is the value of the
/// `pipeline:` key.
pub fn pasted_inputs(node: &Node) -> Vec<PastedInput> {
    let open: Vec<InputField> = runtime_inputs(node)
        .into_iter()
        .filter(|f| f.input.allowed_values.is_none() && f.input.regex.is_none())
        .collect();
    if open.is_empty() {
        return Vec::new();
    }
    let is_script = |path: &str| path.ends_with(".spec.source.spec.script") || path.ends_with(".spec.command");
    let mut out: Vec<PastedInput> = open
        .iter()
        .filter(|f| is_script(&f.path))
        .map(|f| PastedInput { input: f.path.clone(), script: f.path.clone(), span: f.span })
        .collect();
    // What a script would write to read each input, and in which stage that spelling means it.
    let mut refs: Vec<(&InputField, String, Option<&str>)> = Vec::new();
    for f in &open {
        if let Some(var) = f.path.strip_prefix("pipeline.variables.") {
            refs.push((f, format!("pipeline.variables.{var}"), None));
        } else if let Some(rest) = f.path.strip_prefix("pipeline.stages.")
            && let Some((stage, var)) = rest.split_once(".variables.")
            && !var.contains('.')
        {
            refs.push((f, format!("pipeline.stages.{stage}.variables.{var}"), None));
            refs.push((f, format!("stage.variables.{var}"), Some(stage)));
        }
    }
    if refs.is_empty() {
        return out;
    }
    walk(node, "pipeline", None, "pipeline", false, &mut |path, stage, _, n| {
        let Some(text) = n.as_scalar() else { return };
        if !is_script(path) || !text.contains("<+") {
            return;
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for (f, spelling, in_stage) in &refs {
            if in_stage.is_some_and(|s| Some(s) != stage) {
                continue;
            }
            if compact.contains(&format!("<+{spelling}>")) && !out.iter().any(|o| o.input == f.path && o.script == path)
            {
                out.push(PastedInput { input: f.path.clone(), script: path.to_string(), span: n.span });
            }
        }
    });
    out
}

/// The values an input set gives, by path (`node` is the input set's `pipeline:` value). Identifying fields
/// (`identifier`, `name`, `type`) are not values.
pub fn input_set_values(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(node, "pipeline", None, "pipeline", true, &mut |path, _, _, n| {
        match n.as_scalar() {
            Some(s) => {
                let last = path.rsplit('.').next().unwrap_or_default();
                if !matches!(last, "identifier" | "name" | "type" | "orgIdentifier" | "projectIdentifier") {
                    out.insert(path.to_string(), s.to_string());
                }
            }
            // A map or list is the value of a field that is `<+input>` as a whole (`build: {type: branch, …}`,
            // `infrastructureDefinitions: [...]`), or just the shape around other values: which one, `resolve`
            // decides against the pipeline's fields.
            None => {
                out.insert(path.to_string(), structured(&n.to_json()));
            }
        }
    });
    out
}

/// The marker of a structured value (a map or list given for a field that is `<+input>` as a whole): the value
/// is this character followed by the JSON text. No value a person types starts with it.
const STRUCTURED: char = '\u{1}';

/// A map or list, as a supplied value.
pub fn structured(v: &serde_json::Value) -> String {
    format!("{STRUCTURED}{v}")
}

/// The map or list a supplied value holds, if it is one.
pub fn as_structured(v: &str) -> Option<serde_json::Value> {
    serde_json::from_str(v.strip_prefix(STRUCTURED)?).ok()
}

/// Quote a value so that a template reads it back exactly and never evaluates it.
pub fn literal(value: &str) -> String {
    if !value.contains("<+") {
        return value.to_string();
    }
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("<+'{escaped}'>")
}

/// Resolve every runtime input of a pipeline: a supplied value (checked against the marker), else the
/// default; inputs in stages outside `stages` (when given) are not needed. Returns the value per path and its
/// source, or every problem at once.
pub fn resolve(
    fields: &[InputField],
    supplied: &BTreeMap<String, (String, InputSource)>,
    stages: Option<&[String]>,
) -> Result<BTreeMap<String, (String, InputSource)>, Vec<InputProblem>> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for f in fields {
        let needed = match (&f.stage, stages) {
            (Some(s), Some(sel)) => sel.contains(s),
            _ => true,
        };
        match supplied.get(&f.path) {
            // Asked while the run goes, when it reaches the field's stage or step: not needed now.
            None if f.input.execution_input => {}
            // A map or list for the whole field: constraints are about text, the model checks its shape.
            Some((v, src)) if as_structured(v).is_some() => {
                out.insert(f.path.clone(), (v.clone(), src.clone()));
            }
            Some((v, src)) => match f.input.check(v) {
                Ok(()) => {
                    out.insert(f.path.clone(), (v.clone(), src.clone()));
                }
                Err(e) => problems.push(InputProblem { path: f.path.clone(), message: e.to_string(), missing: false }),
            },
            None => match &f.input.default {
                Some(d) => {
                    out.insert(f.path.clone(), (d.clone(), InputSource::Default));
                }
                None if needed => problems.push(InputProblem {
                    path: f.path.clone(),
                    message: describe_missing(&f.input),
                    missing: true,
                }),
                None => {}
            },
        }
    }
    for (path, (v, _)) in supplied {
        // The shape around values, and what lies inside a structured value, are not inputs of their own.
        let inside = |f: &InputField| path.starts_with(&format!("{}.", f.path));
        if as_structured(v).is_some() || fields.iter().any(inside) {
            continue;
        }
        if !fields.iter().any(|f| &f.path == path) {
            let hint = crate::read::did_you_mean(path, fields.iter().map(|f| f.path.as_str()));
            problems.push(InputProblem {
                missing: false,
                path: path.clone(),
                message: format!("is not a runtime input of this pipeline{hint}"),
            });
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn describe_missing(i: &RuntimeInput) -> String {
    let mut s = String::from("is required and has no default");
    if let Some(a) = &i.allowed_values {
        s.push_str(&format!("; allowed values: {}", a.join(", ")));
    }
    if let Some(r) = &i.regex {
        s.push_str(&format!("; must match {r}"));
    }
    s
}

/// The expression an `.executionInput()` field holds until the run asks for it: it reads the value given
/// then (kept under `executionInput` in the execution's values), and fails to resolve — naming the input —
/// if anything read it before.
pub fn placeholder(path: &str) -> String {
    format!("<+executionInput[\"{path}\"]>")
}

/// Replace the runtime-input scalars of a pipeline tree with their values; the `.executionInput()` fields at
/// `asked` (not given at start) with their [`placeholder`].
pub fn apply(
    node: &Node,
    values: &BTreeMap<String, (String, InputSource)>,
    asked: &std::collections::BTreeSet<String>,
) -> Node {
    let mut out = node.clone();
    apply_at(&mut out, "pipeline", &|path: &str| match values.get(path) {
        Some((v, _)) if as_structured(v).is_some() => Some(v.clone()),
        Some((v, _)) => Some(literal(v)),
        None => asked.contains(path).then(|| placeholder(path)),
    });
    out
}

/// A YAML node holding a JSON value, every part of it at `span` (the field it replaces).
fn node_of(v: &serde_json::Value, span: crate::diag::Span) -> Node {
    let scalar = |text: String, style: Style| Node { yaml: Yaml::Scalar(text, style), span };
    match v {
        serde_json::Value::Null => scalar("null".into(), Style::Plain),
        serde_json::Value::Bool(b) => scalar(b.to_string(), Style::Plain),
        serde_json::Value::Number(n) => scalar(n.to_string(), Style::Plain),
        serde_json::Value::String(t) => scalar(t.clone(), Style::DoubleQuoted),
        serde_json::Value::Array(items) => {
            Node { yaml: Yaml::Seq(items.iter().map(|i| node_of(i, span)).collect()), span }
        }
        serde_json::Value::Object(m) => Node {
            yaml: Yaml::Map(m.iter().map(|(k, v)| (scalar(k.clone(), Style::Plain), node_of(v, span))).collect()),
            span,
        },
    }
}

/// A scalar's new text by its path, if it changes.
type Replace<'a> = &'a dyn Fn(&str) -> Option<String>;

fn apply_at(node: &mut Node, path: &str, values: Replace<'_>) {
    // Walk mutably with the same path rules as `walk_paths`.
    match &mut node.yaml {
        Yaml::Scalar(s, style) => {
            if s.trim_start().starts_with("<+input>")
                && let Some(v) = values(path)
            {
                if let Some(data) = as_structured(&v) {
                    *node = node_of(&data, node.span);
                    return;
                }
                // A plain scalar keeps booleans and numbers typed; text that YAML would read as null stays text.
                let null_like = matches!(v.as_str(), "" | "~" | "null" | "Null" | "NULL");
                *s = v;
                *style = if null_like || s.contains("<+") { Style::DoubleQuoted } else { Style::Plain };
            }
        }
        Yaml::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let key = k.as_scalar().unwrap_or_default().to_string();
                apply_at(v, &format!("{path}.{key}"), values);
            }
        }
        Yaml::Seq(items) => {
            let is_variable = path.ends_with(".variables");
            for (i, item) in items.iter_mut().enumerate() {
                let wrapper = match &item.yaml {
                    Yaml::Map(entries) if entries.len() == 1 => entries[0]
                        .0
                        .as_scalar()
                        .map(String::from)
                        .filter(|k| matches!(k.as_str(), "parallel" | "stage" | "step" | "stepGroup")),
                    _ => None,
                };
                if let Some(kind) = wrapper {
                    let Yaml::Map(entries) = &mut item.yaml else { continue };
                    let inner = &mut entries[0].1;
                    if kind == "parallel" {
                        apply_at(inner, path, values);
                    } else {
                        let id = inner.get("identifier").and_then(Node::as_scalar).unwrap_or("?").to_string();
                        apply_at(inner, &format!("{path}.{id}"), values);
                    }
                    continue;
                }
                let key = item_key(item).map(String::from);
                match (key, is_variable) {
                    (Some(name), true) => {
                        if let Yaml::Map(entries) = &mut item.yaml
                            && let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_scalar() == Some("value"))
                        {
                            apply_at(v, &format!("{path}.{name}"), values);
                        }
                    }
                    (Some(key), false) => apply_at(item, &format!("{path}.{key}"), values),
                    (None, _) => apply_at(item, &format!("{path}.{i}"), values),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_pasted_into_scripts_are_found() {
        let yaml = r#"pipeline:
  identifier: p
  variables:
    - name: tag
      type: String
      value: <+input>
    - name: env
      type: String
      value: <+input>.allowedValues(dev,prod)
    - name: unused
      type: String
      value: <+input>
  stages:
    - stage:
        identifier: build
        type: Custom
        variables:
          - name: flags
            type: String
            value: <+input>
        spec:
          execution:
            steps:
              - step:
                  identifier: s
                  type: ShellScript
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: docker build -t app:<+pipeline.variables.tag> <+stage.variables.flags> --env <+pipeline.variables.env>
              - step:
                  identifier: free
                  type: ShellScript
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: <+input>
"#;
        let doc = crate::parse_document("p.yaml", yaml.into());
        let body = doc.root.as_ref().and_then(|r| r.get("pipeline")).expect("a body");
        let mut got: Vec<(String, String)> = pasted_inputs(body)
            .into_iter()
            .map(|p| (p.input, p.script.rsplit("steps.").next().unwrap().to_string()))
            .collect();
        got.sort();
        let free = "pipeline.stages.build.spec.execution.steps.free.spec.source.spec.script";
        assert_eq!(
            got,
            [
                (free.to_string(), "free.spec.source.spec.script".to_string()),
                ("pipeline.stages.build.variables.flags".into(), "s.spec.source.spec.script".into()),
                ("pipeline.variables.tag".into(), "s.spec.source.spec.script".into()),
            ]
        );
        assert_eq!(
            input_env_name("pipeline.stages.build.variables.flags"),
            "PIPEWRIGHT_INPUT_PIPELINE_STAGES_BUILD_VARIABLES_FLAGS"
        );
    }
}
