//! The execution as a whole: the pipeline's values in the tree (`<+pipeline.*>`), its own inputs and
//! variables, its stages in order (a parallel block's side by side) under its timeout, the pipeline rollback,
//! and the status it ends with.

use super::*;

impl<'p> Run<'p> {
    pub(super) async fn pipeline(&self) -> Res<Status> {
        let p = self.pipeline;
        self.store.set_execution_status(&self.exec.id, Status::Running, None, &self.fence).await?;
        self.set_tree(&["pipeline"], Value::Map(self.root_values()));
        for (k, v) in &self.config.codebase {
            let mut path = vec!["codebase"];
            path.extend(k.split('.'));
            self.set_tree(&path, Value::String(v.clone()));
        }
        let given = self.given.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (path, v) in given {
            self.set_tree(&["executionInput", path.as_str()], Value::String(v));
        }
        // The pipeline's own `.executionInput()` fields are asked before anything else runs.
        if let Err((status, why)) =
            self.ask(None, "pipeline", false, p.timeout.as_ref().and_then(|t| t.as_std())).await?
        {
            self.set_status(status, Some(&why)).await?;
            return Ok(status);
        }

        let scope = Scope::default();
        for v in &p.variables {
            match self.variable(v, &BTreeMap::new(), &scope) {
                Ok(val) => self.set_tree(&["pipeline", "variables", v.name.as_str()], val),
                Err(e) => {
                    let msg = e.within("pipeline variable", &v.name.value).to_string();
                    self.set_status(Status::Failed, Some(&msg)).await?;
                    return Ok(Status::Failed);
                }
            }
        }

        self.restore_values();

        let timed_out = self.stages().await?;
        if timed_out {
            self.expire_running("").await?;
            let _ = self.abort_tx.send(true);
        }
        if self.rollback_pipeline.load(Ordering::SeqCst) && !self.aborted() {
            self.pipeline_rollback().await?;
        }
        let (status, failure) = if timed_out {
            (Status::Expired, Some("the pipeline timed out".to_string()))
        } else if self.aborted() {
            (Status::Aborted, Some("the execution was aborted".to_string()))
        } else if self.failed.load(Ordering::SeqCst) {
            (Status::Failed, None)
        } else {
            (Status::Success, None)
        };
        self.set_status(status, failure.as_deref()).await?;
        Ok(status)
    }

    /// `<+pipeline.*>` as the run starts.
    fn root_values(&self) -> BTreeMap<String, Value> {
        let p = self.pipeline;
        let mut root = BTreeMap::new();
        root.insert("name".into(), Value::String(p.name.value.clone()));
        root.insert("identifier".into(), Value::String(p.identifier.value.clone()));
        root.insert("sequenceId".into(), Value::Int(self.exec.sequence_id));
        root.insert("executionId".into(), Value::String(self.exec.id.clone()));
        root.insert("startTs".into(), Value::Int(now_ms()));
        root.insert("status".into(), Value::String(Status::Running.expression_value().into()));
        root.insert("currentStatus".into(), Value::String(Status::Running.expression_value().into()));
        // Runs started by a person (the CLI, the API, the web UI): Harness's value for a manual run.
        root.insert("triggerType".into(), Value::String("MANUAL".into()));
        root.insert(
            "executionUrl".into(),
            self.config.url.as_ref().map_or(Value::Null, |u| Value::String(format!("{u}/executions/{}", self.exec.id))),
        );
        root.insert(
            "description".into(),
            p.description.as_ref().map_or(Value::Null, |d| Value::String(d.value.clone())),
        );
        root.insert("tags".into(), Value::from(serde_json::Value::Object(p.tags.clone().unwrap_or_default())));
        root.insert("properties".into(), p.properties.clone().map_or(Value::Null, Value::from));
        root.insert("orgIdentifier".into(), Value::String(self.exec.org.clone()));
        root.insert("projectIdentifier".into(), Value::String(self.exec.project.clone()));
        root.insert(
            "triggeredBy".into(),
            Value::Map(BTreeMap::from([("name".to_string(), Value::String(self.exec.triggered_by.clone()))])),
        );
        let selected: Vec<String> = if self.exec.selected_stages.is_empty() {
            p.all_stages().iter().map(|s| s.identifier.value.clone()).collect()
        } else {
            self.exec.selected_stages.clone()
        };
        root.insert("selectedStages".into(), Value::List(selected.iter().cloned().map(Value::String).collect()));
        root.insert("stages".into(), Value::Map(BTreeMap::new()));
        root.insert("variables".into(), Value::Map(BTreeMap::new()));
        root
    }

    /// Values seeded before the run (supplied or reused dependencies), and, resuming, what finished before
    /// the process died (outputs, statuses, variables).
    fn restore_values(&self) {
        for (path, v) in &self.seed.values {
            let segs: Vec<&str> = path.split('.').collect();
            self.set_tree(&segs, v.clone());
        }
        // Resuming: what finished before the process died is back in the tree (outputs, statuses, variables).
        if !self.prior.is_empty() {
            let done: Vec<Node> = self.prior.values().filter(|n| n.status.is_final()).cloned().collect();
            if let Value::Map(root) = crate::tree_from_nodes(&done)
                && let Some(Value::Map(p)) = root.get("pipeline")
                && let Some(Value::Map(stages)) = p.get("stages")
            {
                for (id, sub) in stages {
                    self.set_tree(&["pipeline", "stages", id], sub.clone());
                }
            }
        }
    }

    /// The stages in order, a parallel block's side by side, under the pipeline's timeout; whether it ran out.
    async fn stages(&self) -> Res<bool> {
        let p = self.pipeline;
        let stages = async {
            for group in p.stage_groups() {
                if group.len() == 1 {
                    let end = self.stage(group[0]).await?;
                    self.learn(&end);
                } else {
                    fan_out(group.clone(), group.len(), |s| self.stage(s), |end| self.learn(end)).await?;
                }
            }
            Res::Ok(())
        };
        Ok(match p.timeout.as_ref().and_then(|t| t.as_std()) {
            Some(t) => match tokio::time::timeout(t, stages).await {
                Ok(r) => {
                    r?;
                    false
                }
                Err(_) => true,
            },
            None => {
                stages.await?;
                false
            }
        })
    }

    /// `PipelineRollback`: the rollback steps of every stage that ran, latest first, each stage's under a
    /// rollback node of its own driven through the lifecycle.
    pub(super) async fn pipeline_rollback(&self) -> Res<()> {
        let ran: Vec<_> = self.ran.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stages = self.pipeline.all_stages();
        for (iid, idx, local) in ran.into_iter().rev() {
            let s = stages[idx];
            if s.spec.execution.rollback_steps.is_empty() {
                continue;
            }
            let node = self.new_node(
                None,
                NodeKind::Stage,
                &format!("{iid}_rollback"),
                &format!("{} (rollback)", s.name.value),
                &format!("{iid}.rollback"),
            );
            let first = self.reached(&node);
            let mut r = RollbackRun { run: self, s, iid, local: Some(local), node };
            drive::drive(&mut r, first).await?;
        }
        Ok(())
    }
}

/// One stage's rollback steps run for a pipeline rollback, as a node of its own.
struct RollbackRun<'a, 'p> {
    run: &'a Run<'p>,
    s: &'p Stage,
    iid: String,
    local: Option<BTreeMap<String, Value>>,
    node: Node,
}

impl drive::Perform for RollbackRun<'_, '_> {
    fn shape(&self) -> lifecycle::Shape {
        lifecycle::Shape { gated: false, body: lifecycle::Body::Children { rollback: false } }
    }

    async fn perform(&mut self, effect: lifecycle::Effect) -> Res<Option<lifecycle::Input>> {
        use lifecycle::{Effect, Input};
        let run = self.run;
        Ok(match effect {
            Effect::RunChildren => {
                let cx = StageCx::new(self.s, &self.iid, &self.node.id, self.local.take().unwrap_or_default());
                let path = format!("{}.rollback", self.iid);
                let end = run
                    .elements(&cx, &self.s.spec.execution.rollback_steps, Vec::new(), &self.node.id, &path, true)
                    .await?;
                Some(Input::children(&end, false, false))
            }

            other => run.common(&mut self.node, other).await?,
        })
    }
}
