//! `pipewright schema`: print the JSON Schema of pipeline YAML generated from the typed model.

use std::process::ExitCode;

/// Print the schema.
pub fn run() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&spec::pipeline_schema())?);
    Ok(ExitCode::SUCCESS)
}
