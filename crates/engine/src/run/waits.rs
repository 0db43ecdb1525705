//! Where a run waits for people: the `.executionInput()` values a node asks for (`Run::ask`, the
//! execution `InputWaiting` while any node waits), and a decision on a failed step (`Run::intervene`).

use super::*;

impl<'p> Run<'p> {
    /// Wait for `pipewright intervene`; `None` when the wait timed out.
    pub(super) async fn intervene(
        &self,
        node: &mut Node,
        log: &LogSink,
        timeout: Option<Duration>,
    ) -> Res<Option<decide::InterventionAction>> {
        node.status = Status::InterventionWaiting;
        self.save(node, Event::Waiting).await?;
        log.line(
            "pipewright",
            &format!(
                "waiting for a decision: pipewright intervene {} --node {} --action retry|ignore|abort|mark-success|mark-failure",
                self.exec.id, node.path
            ),
        )
        .await;
        log.flush().await;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut abort = self.abort_rx.clone();
        loop {
            if let Some(d) = self.store.take_decision(&self.exec.id, &node.id, &self.fence).await? {
                log.line("pipewright", &format!("{} by {}", d.action, d.by)).await;
                match decide::InterventionAction::of(d.action) {
                    Some(choice) => return Ok(Some(choice)),
                    // Not an answer to this wait (an approval's, an input's): said, and the wait goes on.
                    None => {
                        let line = format!("`{}` does not answer a failed step's wait; still waiting", d.action);
                        log.line("pipewright", &line).await;
                    }
                }
            }
            if self.aborted() {
                return Ok(Some(decide::InterventionAction::Abort));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                log.line("pipewright", "no decision before the timeout").await;
                return Ok(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = steps::wait_abort(&mut abort) => {}
            }
        }
    }

    /// Ask for the `.executionInput()` fields of `owner` not given yet (with `when_only`, only those in its
    /// `when`), on `node` (`None`: the pipeline's own fields, asked by the execution), and wait until each is
    /// given. `Err` holds the status and reason the node ends with: nothing came before the timeout, or the
    /// execution was aborted.
    pub(super) async fn ask(
        &self,
        mut node: Option<&mut Node>,
        owner: &str,
        when_only: bool,
        timeout: Option<Duration>,
    ) -> Res<Result<(), (Status, String)>> {
        let when = format!("{owner}.when.");
        let pending = || -> Vec<asked::Asked> {
            let given = self.given.lock().unwrap_or_else(|e| e.into_inner());
            self.asked
                .iter()
                .filter(|a| {
                    a.owner == owner && (!when_only || a.path.starts_with(&when)) && !given.contains_key(&a.path)
                })
                .cloned()
                .collect()
        };
        if pending().is_empty() {
            return Ok(Ok(()));
        }
        let turn = self.asking.lock().unwrap_or_else(|e| e.into_inner()).entry(owner.to_string()).or_default().clone();
        let _turn = turn.lock().await;
        let mut wanted = pending();
        if wanted.is_empty() {
            // Another iteration of this node asked, and got them.
            return Ok(Ok(()));
        }
        let (node_id, node_path) = match node.as_deref() {
            Some(n) => (n.id.clone(), n.path.clone()),
            None => (self.exec.id.clone(), "pipeline".to_string()),
        };
        let log = self.ask_log(node.as_deref(), &node_path).await?;
        // The execution says what it waits for, and on which node, before anyone is told.
        for a in &wanted {
            let entry = asked::waiting_entry(a, &node_id, &node_path);
            self.store.set_execution_input(&self.exec.id, &a.path, &entry, &self.fence).await?;
        }
        let before = node.as_deref().map(|n| n.status);
        if let Some(n) = node.as_deref_mut() {
            n.status = Status::InputWaiting;
            n.started_at.get_or_insert_with(now_ms);
            self.save(n, Event::Waiting).await?;
        }
        self.input_waits(true).await?;
        let mut line = format!("waiting for runtime inputs: pipewright input {}", self.exec.id);
        for a in &wanted {
            line.push_str(&format!(" --input {}=VALUE", a.path));
        }
        log.line("pipewright", &line).await;
        for a in &wanted {
            let about = asked::describe(&a.input);
            let about = if about.is_empty() { String::new() } else { format!(" ({about})") };
            log.line("pipewright", &format!("  {}{about}", a.path)).await;
        }
        log.flush().await;
        let outcome = self.await_inputs(&mut wanted, &node_id, &node_path, &log, timeout).await?;
        if let Err((_, why)) = &outcome {
            log.line("pipewright", why).await;
        }
        log.flush().await;
        if node.is_some() {
            // The node's own log numbers on after what the ask wrote.
            let last = log.seq().await;
            self.asked_logs.lock().unwrap_or_else(|e| e.into_inner()).insert(node_id.clone(), last);
        }
        self.input_waits(false).await?;
        if let (Ok(()), Some(n), Some(before)) = (&outcome, node, before) {
            n.status = before;
            self.save(n, Event::Resumed).await?;
        }
        Ok(outcome)
    }

    /// The log an ask writes on: the node's (numbered on after what it has, when an earlier ask or the
    /// process that died wrote on it), or for the pipeline's own fields one that is shown only.
    async fn ask_log(&self, node: Option<&Node>, node_path: &str) -> Res<LogSink> {
        let Some(n) = node else {
            return Ok(LogSink::shown_only(self.observer.clone(), self.masker.clone(), node_path));
        };
        let mut logged = self.asked_logs.lock().unwrap_or_else(|e| e.into_inner()).get(&n.id).copied();
        if self.prior.contains_key(&n.path) {
            let chunks = self.store.logs(&self.exec.id, Some(std::slice::from_ref(&n.id))).await?;
            logged = logged.max(chunks.iter().map(|c| c.seq).max());
        }
        Ok(self.sink(n).after(logged.unwrap_or(0)))
    }

    /// Take the values given for `wanted` (checked once more, recorded with who gave them) until every one
    /// is given, the execution is aborted or `timeout` passes.
    async fn await_inputs(
        &self,
        wanted: &mut Vec<asked::Asked>,
        node_id: &str,
        node_path: &str,
        log: &LogSink,
        timeout: Option<Duration>,
    ) -> Res<Result<(), (Status, String)>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut abort = self.abort_rx.clone();
        loop {
            while let Some(d) = self.store.take_decision(&self.exec.id, node_id, &self.fence).await? {
                for (path, v) in d.inputs.as_object().into_iter().flatten() {
                    let Some(i) = wanted.iter().position(|a| &a.path == path) else { continue };
                    let value = v.as_str().map_or_else(|| v.to_string(), String::from);
                    // The CLI, the API and the web UI check values before they are recorded; this is the last word.
                    if let Err(e) = wanted[i].input.check(&value) {
                        log.line("pipewright", &format!("`{path}`: {e}; still waiting for it")).await;
                        continue;
                    }
                    let a = wanted.remove(i);
                    self.given.lock().unwrap_or_else(|e| e.into_inner()).insert(a.path.clone(), value.clone());
                    self.set_tree(&["executionInput", a.path.as_str()], Value::String(value.clone()));
                    let entry = asked::given_entry(&value, &d.by, node_path);
                    self.store.set_execution_input(&self.exec.id, &a.path, &entry, &self.fence).await?;
                    log.line("pipewright", &format!("`{}` given by {}", a.path, d.by)).await;
                }
            }
            if wanted.is_empty() {
                return Ok(Ok(()));
            }
            if self.aborted() {
                return Ok(Err((
                    Status::Aborted,
                    "the execution was aborted while waiting for runtime inputs".to_string(),
                )));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                let paths: Vec<&str> = wanted.iter().map(|a| a.path.as_str()).collect();
                let why = format!("no value was given for {} before the timeout", paths.join(", "));
                return Ok(Err((Status::Expired, why)));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = steps::wait_abort(&mut abort) => {}
            }
        }
    }

    /// One more (or one fewer) node waiting for inputs: the execution is `InputWaiting` while any is.
    pub(super) async fn input_waits(&self, more: bool) -> Res<()> {
        let mut n = self.input_waits.lock().await;
        let was = *n;
        *n = if more { was + 1 } else { was.saturating_sub(1) };
        match (was, *n) {
            (0, 1) => self.set_status(Status::InputWaiting, None).await?,
            (1, 0) if !self.aborted() => self.set_status(Status::Running, None).await?,
            _ => {}
        }
        Ok(())
    }
}
