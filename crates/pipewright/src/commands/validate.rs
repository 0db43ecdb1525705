//! `pipewright validate`: load each file (or every YAML file below a directory), print every diagnostic with
//! its position and a caret snippet, and a one-line summary per file; or one JSON object per file. Also
//! `pipewright render`: a pipeline with its templates resolved.

use crate::Output;
use anyhow::Context;
use spec::template::Library;
use spec::{Document, Entity, ExecutionElement};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = spec::yaml_files(p).with_context(|| format!("{}: cannot list the directory", p.display()))?;
            if found.is_empty() {
                anyhow::bail!("{}: no .yaml or .yml files in this directory", p.display());
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn count_steps(els: &[ExecutionElement]) -> usize {
    els.iter()
        .map(|e| match e {
            ExecutionElement::Step(_) => 1,
            ExecutionElement::StepGroup(g) => count_steps(&g.steps),
            ExecutionElement::Parallel(p) => count_steps(p),
        })
        .sum()
}

fn summary(doc: &Document) -> String {
    let warnings = doc.warnings().count();
    let w = match warnings {
        0 => String::new(),
        1 => " (1 warning)".into(),
        n => format!(" ({n} warnings)"),
    };
    match (&doc.entity, doc.is_valid()) {
        (Some(Entity::Pipeline(p)), true) => {
            let stages = p.all_stages();
            let steps: usize = stages.iter().map(|s| count_steps(&s.spec.execution.steps)).sum();
            format!(
                "{}: valid pipeline `{}`: {} stages, {} steps{w}",
                doc.path,
                p.identifier.value,
                stages.len(),
                steps
            )
        }
        (Some(e), true) => format!("{}: valid {} `{}`{w}", doc.path, e.kind(), e.identifier()),
        _ => {
            let errors = doc.errors().count();
            format!("{}: invalid: {errors} error{}{w}", doc.path, if errors == 1 { "" } else { "s" })
        }
    }
}

/// Validate the files; the templates they use are read from their `.harness/` folder and `templates`.
pub fn run(paths: &[PathBuf], output: Output, templates: Option<&Path>) -> anyhow::Result<ExitCode> {
    let files = expand(paths)?;
    let mut ok = true;
    // One library per `.harness/` folder.
    let mut libraries: HashMap<Option<PathBuf>, Library> = HashMap::new();
    for f in &files {
        // pipewright's own settings file sits in the `.harness/` folder beside the Harness files.
        if f.file_name().is_some_and(|n| n == spec::SETTINGS_FILE) {
            let (valid, message) = match spec::load_settings(f) {
                Ok((s, warnings)) => {
                    eprint!("{warnings}");
                    (true, format!("{}: valid settings: {} step handlers", f.display(), s.step_handlers.len()))
                }
                Err(e) => {
                    eprint!("{e}");
                    (false, format!("{}: invalid settings", f.display()))
                }
            };
            ok &= valid;
            match output {
                Output::Text => println!("{message}"),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"file": f.display().to_string(), "valid": valid, "kind": "settings"})
                ),
            }
            continue;
        }
        let key = super::run::default_entities(f);
        if !libraries.contains_key(&key) {
            libraries.insert(key.clone(), super::run::templates(f, templates)?);
        }
        let doc = match spec::load_file_with(f, libraries.get(&key)) {
            Ok(d) => d,
            Err(e) => {
                ok = false;
                match output {
                    Output::Text => eprintln!("error: {e}"),
                    Output::Json => println!(
                        "{}",
                        serde_json::json!({"file": f.display().to_string(), "valid": false,
                            "errors": [{"line": 0, "column": 0, "message": e.to_string()}], "warnings": []})
                    ),
                }
                continue;
            }
        };
        ok &= doc.is_valid();
        match output {
            Output::Text => {
                eprint!("{}", doc.render_diagnostics());
                println!("{}", summary(&doc));
            }
            Output::Json => {
                // A diagnostic inside a template names the template's file.
                let one = |d: &spec::Diagnostic| {
                    let mut v = serde_json::to_value(d.to_json()).unwrap_or_default();
                    if d.span.file != 0 {
                        v["file"] = doc.file(d.span.file).0.into();
                    }
                    v
                };
                let v = serde_json::json!({
                    "file": doc.path,
                    "valid": doc.is_valid(),
                    "kind": doc.entity.as_ref().map(Entity::kind),
                    "errors": doc.errors().map(one).collect::<Vec<_>>(),
                    "warnings": doc.warnings().map(one).collect::<Vec<_>>(),
                    "templates": doc.uses.iter().map(|u| serde_json::json!({"template": u.template, "file": doc.file(u.file).0})).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string(&v)?);
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `pipewright render`: the pipeline with its templates resolved, on standard output.
pub fn render(file: &Path, templates: Option<&Path>) -> anyhow::Result<ExitCode> {
    let doc = match super::plan::load(file, templates)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    eprint!("{}", doc.render_diagnostics());
    for u in &doc.uses {
        eprintln!("template {} from {}", u.template, doc.file(u.file).0);
    }
    print!("{}", doc.run_source());
    Ok(ExitCode::SUCCESS)
}
