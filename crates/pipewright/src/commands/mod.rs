//! One module per CLI command; each exposes `run(…) -> anyhow::Result<ExitCode>`.

pub mod schema;
pub mod validate;
