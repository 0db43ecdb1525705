//! One step (or one iteration of a looping step) carried through the node lifecycle: the effects
//! `lifecycle::advance` asks for — its inputs, its `when`, its attempts (retries, attempts lost to executors
//! that went away, a person's decision, an attempt the process that died left), its end — carried out
//! against the run, and what its stage learns from that end.

use super::drive::{self, Perform};
use super::{Res, Run, StageCx, json_map};
use crate::Event;
use crate::decide::{self, Ending, Next};
use crate::lifecycle::{Ask, Attempt, Close, Effect, End, Input, Report, Resume, Shape, Signal};
use crate::logs::LogSink;
use crate::path::NodePath;
use crate::steps::{self, StepEnv};
use crate::tree::NodeCtx;
use expr::{Scope, Value};
use spec::{ErrorType, FailureStrategy, Step, StepGroup};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use store::{Node, NodeKind, Status};

/// A step being driven.
pub(super) struct StepRun<'a, 'p> {
    run: &'a Run<'p>,
    cx: &'a StageCx<'p>,
    s: &'p Step,
    rollback: bool,
    local: BTreeMap<String, Value>,
    scope: Scope,
    /// Where its values are in the tree.
    tree: Vec<String>,
    /// The YAML owner its `.executionInput()` fields name.
    owner: String,
    strategies: Vec<&'p FailureStrategy>,
    node: Node,
    /// The log of the current node, once something is written to it.
    log: Option<std::sync::Arc<LogSink>>,
    /// Chunks the current node had before this process took it over.
    logged: i64,
    /// The lifecycle counts attempts from 1; the node's own count starts after this (a node taken over while
    /// waiting may be past its first attempt).
    base: i64,
    /// How long a person's decision is waited for.
    wait: Option<Duration>,
    /// An attempt ran: its outputs are the step's.
    ran: bool,
}

impl<'p> Run<'p> {
    /// Run a step (or one iteration of it, `id` its identifier with the suffix) to its end.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn step(
        &self,
        cx: &StageCx<'p>,
        s: &'p Step,
        id: String,
        groups: &[(&'p StepGroup, String)],
        parent: &str,
        path: &str,
        rollback: bool,
        mut local: BTreeMap<String, Value>,
    ) -> Res<End> {
        // `<+step.name>`, `<+step.identifier>`, `<+step.type>`: the step being run.
        local.insert(
            "step".into(),
            Value::Map(BTreeMap::from([
                ("name".to_string(), Value::String(s.name.value.clone())),
                ("identifier".to_string(), Value::String(s.identifier.value.clone())),
                ("type".to_string(), Value::String(s.step_type.name().to_string())),
            ])),
        );
        let at = |id: &str, yaml: bool| {
            let mut p = NodePath::stage(if yaml { &cx.stage.identifier.value } else { &cx.id }, None);
            if rollback {
                p = p.rollback();
            }
            for (g, gid) in groups {
                p = p.child(if yaml { &g.identifier.value } else { gid }, None);
            }
            p.child(id, None)
        };
        let strategies = s
            .failure_strategies
            .iter()
            .chain(groups.iter().rev().flat_map(|(g, _)| g.failure_strategies.iter()))
            .chain(cx.stage.failure_strategies.iter())
            .collect();
        let mut st = StepRun {
            run: self,
            cx,
            s,
            rollback,
            local,
            scope: self.scope_of(cx, groups),
            tree: at(&id, false).tree(),
            owner: at(&s.identifier.value, true).owner(),
            strategies,
            node: self.new_node(Some(parent), NodeKind::Step, &id, &s.name, &format!("{path}.{id}")),
            log: None,
            logged: 0,
            base: 0,
            wait: None,
            ran: false,
        };
        let first = st.first().await?;
        let end = drive::drive(&mut st, first).await?;
        st.set_status(end.status);
        Ok(end)
    }
}

impl StepRun<'_, '_> {
    /// How the lifecycle is entered: the node as it is stored when the run is resumed, or reached afresh.
    async fn first(&mut self) -> Res<Input> {
        let n = &self.node;
        if n.status.is_final() {
            // Resuming: it ended before the process died; its outputs are in the tree already.
            return Ok(Input::Settled(End::new(n.status, None)));
        }
        if self.run.aborted() || !self.run.prior.contains_key(&n.path) {
            return Ok(Input::Begin { aborted: self.run.aborted() });
        }
        // A node taken over has log chunks already: its sink numbers on after them.
        let chunks = self.run.store.logs(&self.run.exec.id, Some(std::slice::from_ref(&n.id))).await?;
        self.logged = chunks.iter().map(|c| c.seq).max().unwrap_or(0);
        Ok(match n.status {
            // The failure is decided again, on the same node.
            Status::InterventionWaiting => {
                self.base = n.attempt - 1;
                let action = decide::matching(&self.strategies, ErrorType::Unknown);
                let on_timeout = match decide::next(action, 0) {
                    Next::AskPerson { timeout, on_timeout } => {
                        self.wait = timeout;
                        on_timeout
                    }
                    _ => Ending::AsFailed,
                };
                Input::Resumed(Resume::AwaitingDecision {
                    attempt: Attempt::FIRST,
                    failed: Status::Failed,
                    reason: n.failure.clone(),
                    on_timeout,
                })
            }
            // Its process never started: it asks again (what was given meanwhile counts) and then runs.
            Status::ApprovalWaiting | Status::InputWaiting => {
                self.base = n.attempt - 1;
                Input::Resumed(Resume::Again)
            }
            _ => Input::Resumed(Resume::Interrupted(Attempt {
                n: u32::try_from(n.attempt).unwrap_or(u32::MAX),
                retries: 0,
                lost: 0,
            })),
        })
    }

    fn set_status(&self, st: Status) {
        let path: Vec<&str> = self.tree.iter().map(String::as_str).chain(["status"]).collect();
        self.run.set_tree(&path, Value::String(st.expression_value().into()));
    }

    /// The current node's log.
    fn log(&mut self) -> std::sync::Arc<LogSink> {
        let (run, node, logged) = (self.run, &self.node, self.logged);
        self.log.get_or_insert_with(|| std::sync::Arc::new(run.sink(node).after(logged))).clone()
    }

    /// A node for attempt `number` when it is past the current node's.
    fn new_attempt(&mut self, number: i64) {
        if number <= self.node.attempt {
            return;
        }
        self.node = Node {
            id: ulid::Ulid::new().to_string(),
            attempt: number,
            position: self.run.position.fetch_add(1, Ordering::SeqCst),
            status: Status::Queued,
            started_at: None,
            ended_at: None,
            failure: None,
            outputs: Default::default(),
            ..self.node.clone()
        };
        self.log = None;
        self.logged = 0;
    }

    /// One attempt: started, run by its step type, reported with the failure strategy that matches it.
    async fn attempt(&mut self, a: Attempt) -> Res<Input> {
        let run = self.run;
        self.new_attempt(self.base + i64::from(a.n));
        self.set_status(Status::Running);
        let log = self.log();
        run.start(&mut self.node).await?;
        if matches!(self.s.spec, spec::StepSpec::HarnessApproval(_)) {
            // The step waits for people: its node says so before anyone is asked.
            self.node.status = Status::ApprovalWaiting;
            run.save(&self.node, Event::Waiting).await?;
        }
        let global = run.tree.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ctx = NodeCtx {
            global: &global,
            local: &self.local,
            scope: &self.scope,
            secrets: run.secrets,
            masker: &run.masker,
        };
        let timeout = self.s.timeout.as_ref().and_then(|t| {
            t.as_std().or_else(|| {
                ctx.render(&t.text).ok().and_then(|x| spec::duration::parse_millis(&x).ok()).map(Duration::from_millis)
            })
        });
        let env = StepEnv {
            ctx: &ctx,
            log: &log,
            timeout,
            abort: run.abort_rx.clone(),
            execution_id: &run.exec.id,
            node_id: &self.node.id,
            stage: &self.cx.id,
            store: &run.store,
            fence: &run.fence,
            inputs: &run.input_env(),
            poll: run.config.poll_interval,
            triggered_by: &run.exec.triggered_by,
            executor: run.executor.as_ref(),
            masker: &run.masker,
            handlers: &run.config.step_handlers,
            handlers_dir: run.config.handlers_dir.as_deref(),
            connectors: &run.config.git_connectors,
            selectors: run.selectors(self.s, self.cx, &ctx),
        };
        let outcome =
            if self.s.step_type == spec::StepType::Background && !run.config.step_handlers.contains_key("Background") {
                match steps::background_task(&env, self.s) {
                    Ok(task) => {
                        log.line("pipewright", "started; runs until the stage ends").await;
                        // The process's lines follow the step's own, which end here.
                        log.flush().await;
                        let after = log.seq().await;
                        run.start_background(self.cx, &self.node, task, after);
                        steps::Outcome::ok(Default::default())
                    }
                    Err(e) => steps::Outcome::failed(ErrorType::Unknown, e),
                }
            } else {
                steps::execute(&env, self.s).await
            };
        if let Some(f) = &outcome.failure {
            log.line("pipewright", f).await;
        }
        log.flush().await;
        self.node.outputs = outcome.outputs;
        self.ran = true;
        let action = decide::matching(&self.strategies, outcome.error);
        if let Next::AskPerson { timeout, .. } = decide::next(action.clone(), a.retries) {
            self.wait = timeout;
        }
        let report =
            Report { status: outcome.status, reason: outcome.failure, error: outcome.error, lost: outcome.lost };
        Ok(Input::Reported(report, action))
    }

    /// The attempt the process that died left: what it left running is stopped, and it is recorded
    /// interrupted; whatever runs it elsewhere (a remote agent) is told to stop.
    async fn close_interrupted(&mut self) -> Res<()> {
        let run = self.run;
        let log = self.log();
        if crate::owner::stop_orphan(&run.store, &run.exec.id, &self.node.id, run.config.kill_grace, &run.fence).await {
            log.line("pipewright", "stopped the step's processes left running by the process that died").await;
        }
        let why = "interrupted: the process running this step stopped; the execution was taken over and the step gets a new attempt";
        log.line("pipewright", why).await;
        log.flush().await;
        run.finish(&mut self.node, Status::Failed, Some(why.into())).await?;
        run.executor.forget(&run.exec.id, &self.node.id).await;
        Ok(())
    }

    /// The wait before a retry: said, then slept unless the execution is aborted meanwhile.
    async fn sleep(&mut self, after: Duration, retry: u32, of: u32) -> Res<Input> {
        let run = self.run;
        let mut failed = self.node.clone();
        failed.failure = failed.failure.map(|f| run.masker.mask(&f));
        run.observer.event(&Event::RetryScheduled { node: Box::new(failed), after, retry, of });
        let log = self.log();
        log.line("pipewright", &format!("retrying in {after:?} (retry {retry} of {of})")).await;
        log.flush().await;
        let mut abort = run.abort_rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(after) => {}
            _ = steps::wait_abort(&mut abort) => {}
        }
        Ok(Input::Slept { aborted: run.aborted() })
    }
}

impl Perform for StepRun<'_, '_> {
    fn shape(&self) -> Shape {
        Shape::STEP
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run = self.run;
        Ok(match effect {
            Effect::Ask(ask) => {
                let timeout = self.s.timeout.as_ref().and_then(|t| t.as_std());
                let asked = run.ask(Some(&mut self.node), &self.owner, ask == Ask::Gate, timeout).await?;
                Some(match asked {
                    Ok(()) => Input::Given,
                    Err((st, why)) => Input::AskFailed(st, why),
                })
            }
            Effect::EvaluateGate => {
                let failed = self.cx.failed.load(Ordering::SeqCst) && !self.rollback;
                let gate = run.when(self.s.when.as_ref(), false, failed, &self.local, &self.scope);
                Some(Input::GateEvaluated(gate.map_err(|e| e.to_string())))
            }
            // A step's node starts with its attempt.
            Effect::Start | Effect::Expand | Effect::RunChildren | Effect::RunRollback => None,
            Effect::RunWork(a) => Some(self.attempt(a).await?),
            Effect::CloseAttempt(status, reason, why) => {
                if why == Close::Lost {
                    let log = self.log();
                    log.line("pipewright", "the step runs again as a new attempt").await;
                    log.flush().await;
                }
                run.finish(&mut self.node, status, reason).await?;
                None
            }
            Effect::CloseInterrupted => {
                self.close_interrupted().await?;
                None
            }
            Effect::Sleep { after, retry, of } => Some(self.sleep(after, retry, of).await?),
            Effect::AwaitDecision => {
                let log = self.log();
                Some(match run.intervene(&mut self.node, &log, self.wait).await? {
                    // An abort of the execution ends the wait: the step is aborted, not failed.
                    Some(decide::InterventionAction::Abort) if run.aborted() => Input::Aborted,
                    Some(choice) => Input::Decided(choice),
                    None => Input::TimedOut,
                })
            }
            Effect::Signal(Signal::Abort) => {
                let _ = run.abort_tx.send(true);
                None
            }
            // The stage learns it from the step's end.
            Effect::Signal(Signal::StageRollback) => None,
            Effect::Signal(Signal::PipelineRollback) => {
                run.rollback_pipeline.store(true, Ordering::SeqCst);
                None
            }
            Effect::Finish(end) => {
                // What the node's last wait said (a decision, who made it) is stored before its end.
                if let Some(log) = &self.log {
                    log.flush().await;
                }
                if end.status.is_good() && self.ran {
                    let path: Vec<&str> =
                        self.tree.iter().map(String::as_str).chain(["output", "outputVariables"]).collect();
                    run.set_tree(&path, json_map(&self.node.outputs));
                }
                run.end_node(&mut self.node, end).await?;
                None
            }
        })
    }
}
