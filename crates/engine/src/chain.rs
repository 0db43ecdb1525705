//! Chained pipelines: a `Pipeline` stage runs another pipeline as a child execution. Starting an execution
//! (finding the pipeline, applying its inputs, recording it) is the launching layer's work, so the engine
//! asks for it through [`Children`], implemented by the CLI (pipelines in the repository's folder) and the
//! server (stored pipelines); the engine renders the stage's `inputs`, waits for the child, and reads the
//! stage's `outputs` from the child's recorded values.

use store::Status;

/// A child execution to run, as a `Pipeline` stage asks for it.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    /// The parent execution.
    pub parent_execution: String,
    /// The parent's stage (iteration) that runs it.
    pub parent_stage: String,
    /// The child pipeline's organization.
    pub org: String,
    /// Its project.
    pub project: String,
    /// Its identifier.
    pub pipeline: String,
    /// Its runtime inputs in its own shape (`{variables: […], stages: […]}`), expressions already resolved.
    pub inputs: serde_json::Value,
    /// How deep the child is in the chain (1 for a child of an execution a person started).
    pub depth: u32,
}

/// A child execution that ended.
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Its id.
    pub execution_id: String,
    /// How it ended.
    pub status: Status,
}

/// Runs child executions to their end.
#[async_trait::async_trait]
pub trait Children: Send + Sync + std::fmt::Debug {
    /// Start the child execution and wait for it to end. `Err` when it could not start (no such pipeline,
    /// inputs it refuses); the text says why.
    async fn run(&self, req: ChildRequest) -> Result<ChildRun, String>;
}

/// How deep chains may nest (a pipeline that chains itself stops here).
pub const MAX_DEPTH: u32 = 8;
