//! One stage iteration's body, in the phases the lifecycle gives it: its steps (`Run::stage_steps`: its
//! entry in the value tree, its service / environment / infrastructure and variables, a chained pipeline or
//! its steps under its timeout), its rollback steps when a step asked for them (`Run::stage_rollback`), and
//! its end (`Run::stage_close`: its `Background` steps, which run until then, are stopped).

use super::*;

impl<'p> Run<'p> {
    /// One stage iteration's steps: its entry in the tree, service / environment, variables, then its steps
    /// (or its chained pipeline). How they ended, with what its rollback and end need when steps ran.
    pub(super) async fn stage_steps(
        &self,
        s: &'p Stage,
        iid: String,
        node: &Node,
        mut local: BTreeMap<String, Value>,
        target: Option<&looping::Target>,
    ) -> Res<(End, Option<StageCx<'p>>, LogSink)> {
        let scope = Scope::stage(&iid);
        self.stage_entry(s, &iid);
        let log = self.sink(node);
        if s.stage_type == StageType::Deployment
            && let Err(e) = self.deployment(s, &iid, &mut local, &scope, target)
        {
            log.line("pipewright", &e.to_string()).await;
            log.flush().await;
            return Ok((End::new(Status::Failed, Some(e.to_string())), None, log));
        }
        for v in &s.variables {
            match self.variable(v, &local, &scope) {
                Ok(val) => self.set_tree(&["pipeline", "stages", iid.as_str(), "variables", v.name.as_str()], val),
                Err(e) => {
                    let msg = e.within("stage variable", &v.name.value).to_string();
                    log.line("pipewright", &msg).await;
                    log.flush().await;
                    return Ok((End::new(Status::Failed, Some(msg)), None, log));
                }
            }
        }
        if s.stage_type == StageType::Pipeline {
            let (status, reason) = self.chained(s, &iid, &local, &scope, &log).await?;
            if let Some(r) = &reason {
                log.line("pipewright", r).await;
            }
            log.flush().await;
            return Ok((End::new(status, reason), None, log));
        }
        let cx = StageCx::new(s, &iid, &node.id, local);
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).push((iid.clone(), self.stage_index(s), cx.local.clone()));
        let body = self.elements(&cx, &s.spec.execution.steps, Vec::new(), &cx.node_id, &cx.path, false);
        let mut end = match s.timeout.as_ref().and_then(|t| t.as_std()) {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(r) => r?,
                Err(_) => {
                    self.expire_running(&format!("{iid}.")).await?;
                    log.line(
                        "pipewright",
                        &format!(
                            "stage timed out after {}",
                            s.timeout.as_ref().map(|t| t.text.as_str()).unwrap_or("?")
                        ),
                    )
                    .await;
                    End::new(Status::Expired, None)
                }
            },
            None => body.await?,
        };
        if self.aborted() && !end.status.is_final() {
            end.status = Status::Aborted;
        }
        Ok((end, Some(cx), log))
    }

    /// The stage's rollback steps, run because one of its steps asked for them.
    pub(super) async fn stage_rollback(&self, cx: &StageCx<'p>, log: &LogSink) -> Res<()> {
        log.line("pipewright", "running the stage's rollback steps").await;
        let rollback_path = format!("{}.rollback", cx.id);
        self.elements(cx, &cx.stage.spec.execution.rollback_steps, Vec::new(), &cx.node_id, &rollback_path, true)
            .await?;
        Ok(())
    }

    /// The end of a stage iteration: its `Background` steps are stopped, its log flushed.
    pub(super) async fn stage_close(&self, cx: Option<&StageCx<'p>>, log: &LogSink) {
        if let Some(cx) = cx {
            stop_background(cx, log).await;
        }
        log.flush().await;
    }

    /// The stage (iteration)'s entry in the tree: `<+pipeline.stages.ID.identifier>`, `name`, `type`, `status`.
    fn stage_entry(&self, s: &Stage, iid: &str) {
        let base = ["pipeline", "stages", iid];
        self.set_tree(&[&base[..], &["identifier"]].concat(), Value::String(iid.to_string()));
        self.set_tree(&[&base[..], &["name"]].concat(), Value::String(s.name.value.clone()));
        self.set_tree(
            &[&base[..], &["type"]].concat(),
            Value::String(
                serde_json::to_value(s.stage_type).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            ),
        );
        self.set_tree(&[&base[..], &["status"]].concat(), Value::String(Status::Running.expression_value().into()));
    }

    /// Start a `Background` step's process and leave it running until its stage ends; its lines go to the
    /// step's log meanwhile.
    pub(super) fn start_background(&self, cx: &StageCx<'_>, node: &Node, task: crate::executor::Task, after: i64) {
        let feedback = BackgroundFeedback {
            log: self.sink(node).after(after),
            store: self.store.clone(),
            fence: self.fence.clone(),
            execution_id: self.exec.id.clone(),
            node_id: node.id.clone(),
        };
        let executor = self.executor.clone();
        let (stop, stopped) = watch::channel(false);
        let mut abort = self.abort_rx.clone();
        let task = tokio::spawn(async move {
            // An abort of the execution stops it too.
            let (tx, rx) = watch::channel(false);
            let mut stopped = stopped;
            let run = executor.run(&task, &feedback, rx);
            tokio::pin!(run);
            let report = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = stopped.changed() => { let _ = tx.send(true); }
                    _ = steps::wait_abort(&mut abort) => { let _ = tx.send(true); }
                }
            };
            feedback.log.line("pipewright", &format!("background step stopped ({:?})", report.end)).await;
            feedback.log.flush().await;
        });
        cx.background.lock().unwrap_or_else(|e| e.into_inner()).push((stop, task));
    }

    /// A stage's resolved values, kept on its node so a later execution can reuse them.
    pub(super) fn stage_values(&self, iid: &str) -> serde_json::Map<String, serde_json::Value> {
        let t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = serde_json::Map::new();
        for key in ["variables", "service", "serviceVariables", "env", "infra", "output", "childExecutionId"] {
            if let Some(v) = tree::get(&t, &["pipeline".into(), "stages".into(), iid.into(), key.into()])
                && let Ok(j) = serde_json::to_value(v)
            {
                out.insert(key.to_string(), j);
            }
        }
        out
    }

    pub(super) fn stage_index(&self, s: &Stage) -> usize {
        self.pipeline.all_stages().iter().position(|x| x.identifier.value == s.identifier.value).unwrap_or(0)
    }
}

/// The stage's `Background` steps end with it: each is told to stop, and waited for.
async fn stop_background(cx: &StageCx<'_>, log: &LogSink) {
    let running: Vec<Background> = std::mem::take(&mut *cx.background.lock().unwrap_or_else(|e| e.into_inner()));
    if !running.is_empty() {
        log.line("pipewright", &format!("stopping {} background step(s)", running.len())).await;
    }
    for (stop, _) in &running {
        let _ = stop.send(true);
    }
    for (_, task) in running {
        let _ = task.await;
    }
}
