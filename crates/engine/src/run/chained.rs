//! A `Pipeline` stage: the chained pipeline run as a child execution with the stage's inputs, and the
//! stage's outputs read from what the child recorded.

use super::*;

impl<'p> Run<'p> {
    /// A `Pipeline` stage: run the chained pipeline as a child execution with the stage's inputs, wait for it,
    /// and read the stage's outputs from what the child recorded.
    pub(super) async fn chained(
        &self,
        s: &Stage,
        iid: &str,
        local: &BTreeMap<String, Value>,
        scope: &Scope,
        log: &LogSink,
    ) -> Res<(Status, Option<String>)> {
        let Some(c) = s.spec.chained.as_ref() else {
            return Ok((Status::Failed, Some("the stage names no pipeline to run".into())));
        };
        let Some(children) = self.config.children.clone() else {
            return Ok((
                Status::Failed,
                Some("this runner cannot start chained pipelines (`Pipeline` stages run with `pipewright run` and on a server)".into()),
            ));
        };
        if self.config.chain_depth >= crate::chain::MAX_DEPTH {
            return Ok((
                Status::Failed,
                Some(format!(
                    "pipelines chain deeper than {} levels; does pipeline `{}` chain itself?",
                    crate::chain::MAX_DEPTH,
                    c.pipeline.value
                )),
            ));
        }
        let (org, project, pipeline, inputs) = match self.child_target(c, local, scope) {
            Ok(x) => x,
            Err(e) => return Ok((Status::Failed, Some(e.to_string()))),
        };
        log.line("pipewright", &format!("running pipeline `{pipeline}` ({org}/{project}) as a child execution")).await;
        log.flush().await;
        let req = crate::chain::ChildRequest {
            parent_execution: self.exec.id.clone(),
            parent_stage: iid.to_string(),
            org,
            project,
            pipeline: pipeline.clone(),
            inputs,
            depth: self.config.chain_depth + 1,
        };
        let run = match children.run(req).await {
            Ok(r) => r,
            Err(e) => return Ok((Status::Failed, Some(format!("pipeline `{pipeline}` could not start: {e}")))),
        };
        self.set_tree(&["pipeline", "stages", iid, "childExecutionId"], Value::String(run.execution_id.clone()));
        log.line("pipewright", &format!("child execution {} ended {}", run.execution_id, run.status)).await;
        if let Some(p) = self.child_outputs(c, iid, &run).await? {
            return Ok((Status::Failed, Some(p)));
        }
        let status = match run.status {
            Status::Success | Status::IgnoreFailed => Status::Success,
            other if other.is_final() => other,
            _ => Status::Failed,
        };
        let reason = (status != Status::Success)
            .then(|| format!("child execution {} of pipeline `{pipeline}` ended {}", run.execution_id, run.status));
        Ok((status, reason))
    }

    /// The organization, project, pipeline and inputs of the child, rendered.
    fn child_target(
        &self,
        c: &spec::ChainedPipeline,
        local: &BTreeMap<String, Value>,
        scope: &Scope,
    ) -> Result<(String, String, String, serde_json::Value), NodeError> {
        let render = |v: Option<&spec::Str>, default: &str| -> Result<String, NodeError> {
            match v {
                Some(v) => Ok(self.with_ctx(local, scope, |x| x.render(v))?),
                None => Ok(default.to_string()),
            }
        };
        let org = render(c.org.as_ref(), &self.exec.org)?;
        let project = render(c.project.as_ref(), &self.exec.project)?;
        let pipeline = render(Some(&c.pipeline), "")?;
        let inputs = match &c.inputs {
            Some(i) => self.with_ctx(local, scope, |x| x.render_json(i, "inputs"))?,
            None => serde_json::Value::Null,
        };
        Ok((org, project, pipeline, inputs))
    }

    /// The stage's outputs, read from the child's recorded values into the tree; the problem when one of a
    /// successful child cannot be read (a child that did not succeed may not have produced it).
    async fn child_outputs(
        &self,
        c: &spec::ChainedPipeline,
        iid: &str,
        run: &crate::chain::ChildRun,
    ) -> Res<Option<String>> {
        let nodes = self.store.nodes(&run.execution_id).await?;
        let child_tree = crate::tree_from_nodes(&nodes);
        let (child_scope, none) = (Scope::default(), BTreeMap::new());
        let ctx = crate::tree::NodeCtx {
            global: &child_tree,
            local: &none,
            scope: &child_scope,
            secrets: self.secrets,
            masker: &self.masker,
        };
        let mut outputs = BTreeMap::new();
        let mut problem = None;
        for o in &c.outputs {
            match ctx.render(&o.value) {
                Ok(v) => {
                    outputs.insert(o.name.value.clone(), Value::String(v));
                }
                Err(e) if run.status == Status::Success => problem = Some(format!("output `{}`: {e}", o.name.value)),
                Err(_) => {}
            }
        }
        self.set_tree(&["pipeline", "stages", iid, "output"], Value::Map(outputs));
        Ok(problem)
    }
}
