//! A stage carried through the node lifecycle: selection and reuse first, then its inputs and `when`
//! (which reads whether an earlier stage failed), its iterations — a looping strategy's, and one per
//! deployment target when it deploys several services or to several environments — each a node of its own
//! holding one of the execution's stage slots while it runs, and its body (`StageBody`: its steps, its rollback steps
//! when one asked for them, its end).

use super::drive::{self, Perform};
use super::{Res, Run, StageCx, fan_out, max_concurrency, split_when};
use crate::lifecycle::{self, Effect, End, Input, Shape};
use crate::logs::LogSink;
use crate::looping::{self, Iteration, Target};
use expr::{Scope, Value};
use spec::{Stage, When};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use store::{Node, NodeKind, Status};
use tokio::sync::SemaphorePermit;

/// One run of a stage: an iteration and the deployment target it deploys to, if any.
type StageRunOf = (Iteration, Option<Target>);

/// A stage (iteration)'s body while it runs: why its steps ended as they did, and what its rollback and its
/// end need (its run context, when steps ran, and its log).
#[derive(Default)]
struct StageBody<'p> {
    reason: Option<String>,
    ran: Option<(Option<StageCx<'p>>, LogSink)>,
}

impl<'p> StageBody<'p> {
    /// Its steps (`Run::stage_steps`); how they ended, asking for its rollback when a step did.
    async fn steps(
        &mut self,
        run: &Run<'p>,
        (s, iid, node): (&'p Stage, String, &Node),
        local: BTreeMap<String, Value>,
        target: Option<&Target>,
    ) -> Res<Input> {
        let (mut end, cx, log) = run.stage_steps(s, iid, node, local, target).await?;
        self.reason = end.reason.take();
        let rollback = cx.as_ref().is_some_and(|c| c.rollback.load(Ordering::SeqCst));
        self.ran = Some((cx, log));
        Ok(Input::children(&end, rollback, false))
    }

    /// Its rollback steps.
    async fn rollback(&self, run: &Run<'p>) -> Res<Input> {
        if let Some((Some(cx), log)) = &self.ran {
            run.stage_rollback(cx, log).await?;
        }
        Ok(Input::RolledBack)
    }

    /// Its end: its `Background` steps stopped; the reason its steps gave, unless the lifecycle has one.
    async fn close(&mut self, run: &Run<'p>, end: &mut End) {
        if let Some((cx, log)) = self.ran.take() {
            run.stage_close(cx.as_ref(), &log).await;
        }
        end.reason = end.reason.take().or(self.reason.take());
    }
}

/// A stage being driven.
struct StageRun<'a, 'p> {
    run: &'a Run<'p>,
    s: &'p Stage,
    node: Node,
    scope: Scope,
    when: Option<When>,
    per_iteration: Option<When>,
    /// Its iterations with their deployment targets (none: the stage runs as itself), and how many at once.
    runs: Option<(Vec<StageRunOf>, usize)>,
    /// It runs as itself (no iterations): its body is its own, rollback included.
    single: bool,
    body: StageBody<'p>,
    /// Its slot among the stages that may run at once, when it runs as itself.
    slot: Option<SemaphorePermit<'a>>,
}

/// One iteration of a stage (of its strategy or of its deployment targets), as a node of its own.
struct IterationRun<'a, 'p> {
    run: &'a Run<'p>,
    s: &'p Stage,
    node: Node,
    it: Option<StageRunOf>,
    per_iteration: Option<&'a When>,
    body: StageBody<'p>,
    /// Its slot among the stages that may run at once, from its start to its end.
    slot: Option<SemaphorePermit<'a>>,
}

impl<'p> Run<'p> {
    /// Run a stage to its end; the execution learns from it.
    pub(super) async fn stage(&self, s: &'p Stage) -> Res<End> {
        let id = s.identifier.value.as_str();
        let mut node = self.new_node(None, NodeKind::Stage, id, &s.name, id);
        let selected = self.exec.selected_stages.is_empty() || self.exec.selected_stages.iter().any(|x| x == id);
        let first = if node.status.is_final() {
            // Resuming: this stage ended before the process died.
            Input::Settled(End::new(node.status, None))
        } else if !selected {
            if let Some((exec, status)) = self.seed.reused.get(id) {
                // Its values were seeded; the node records where they come from.
                node.reused_from = Some(exec.clone());
                node.skip_reason = Some(format!("reused from execution {exec}"));
                let status = status.parse::<Status>().unwrap_or(Status::Success);
                self.set_stage_status(id, status);
                return Ok(End::new(self.finish(&mut node, status, None).await?, None));
            }
            self.set_stage_status(id, Status::Skipped);
            return Ok(End::new(self.skip(&mut node, "not selected".into()).await?, None));
        } else {
            Input::Begin { aborted: self.aborted() }
        };

        let (when, per_iteration) = split_when(s.when.as_ref(), s.strategy.is_some());
        let mut sr = StageRun {
            run: self,
            s,
            node,
            scope: Scope::stage(id),
            when,
            per_iteration,
            runs: None,
            single: false,
            body: StageBody::default(),
            slot: None,
        };
        let end = drive::drive(&mut sr, first).await?;
        self.set_stage_status(id, end.status);
        Ok(end)
    }

    fn set_stage_status(&self, iid: &str, st: Status) {
        self.set_tree(&["pipeline", "stages", iid, "status"], Value::String(st.expression_value().into()));
    }
}

/// A stage's runs: every iteration of its strategy for every deployment target (numbered in that order),
/// and how many run at once — all targets of an iteration side by side when they deploy in parallel, one at
/// a time when not.
pub(super) fn with_targets(
    iterations: Vec<Iteration>,
    targets: Option<(Vec<Target>, bool)>,
    max: usize,
) -> (Vec<StageRunOf>, usize) {
    match targets {
        None => (iterations.into_iter().map(|it| (it, None)).collect(), max),
        Some((ts, parallel)) => {
            let n = iterations.len() * ts.len();
            let max = if parallel { (max * ts.len()).clamp(1, n.max(1)) } else { 1 };
            let mut out = Vec::new();
            for it in iterations {
                for t in &ts {
                    let mut it = it.clone();
                    it.suffix = Some(out.len());
                    out.push((it, Some(t.clone())));
                }
            }
            (out, max)
        }
    }
}

impl StageRun<'_, '_> {
    /// The stage's body, under its own node, or each of its runs as an iteration node of its own.
    async fn run_children(&mut self) -> Res<Input> {
        let run = self.run;
        let id = self.s.identifier.value.as_str();
        let all = match self.runs.take() {
            None => {
                // Its slot is held until it ends (`Finish`).
                self.slot = run.stage_slots.acquire().await.ok();
                return self.body.steps(run, (self.s, id.to_string(), &self.node), BTreeMap::new(), None).await;
            }
            Some((runs, max)) => {
                let (s, node_id, per_iteration) = (self.s, &self.node.id, self.per_iteration.as_ref());
                let each = |(it, target): (Iteration, Option<Target>)| async move {
                    let iid = format!("{id}_{}", it.suffix.unwrap_or(0));
                    let label = match (&target, &it.label) {
                        (Some(t), _) => format!("{} ({})", s.name.value, t.label()),
                        (None, Some(values)) => format!("{} ({values})", s.name.value),
                        (None, None) => format!("{} {iid}", s.name.value),
                    };
                    let node = run.new_node(Some(node_id), NodeKind::Stage, &iid, &label, &iid);
                    let first = run.reached(&node);
                    let mut ir = IterationRun {
                        run,
                        s,
                        node,
                        it: Some((it, target)),
                        per_iteration,
                        body: StageBody::default(),
                        slot: None,
                    };
                    drive::drive(&mut ir, first).await
                };
                // A failed iteration fails the pipeline as it ends (a later stage's gate reads it).
                fan_out(runs, max, each, |end| run.learn(end)).await?
            }
        };
        Ok(Input::children(&all, false, false))
    }
}

impl Perform for StageRun<'_, '_> {
    fn shape(&self) -> Shape {
        // Run as itself, its rollback steps are a phase of its own; its iterations have their own.
        let rollback = self.single && !self.s.spec.execution.rollback_steps.is_empty();
        Shape { gated: true, body: lifecycle::Body::Children { rollback } }
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run = self.run;
        let id = self.s.identifier.value.as_str();
        let stage_timeout = self.s.timeout.as_ref().and_then(|t| t.as_std());
        Ok(match effect {
            Effect::Ask(ask) => {
                let gate = ask == crate::lifecycle::Ask::Gate;
                let asked =
                    run.ask(Some(&mut self.node), &format!("pipeline.stages.{id}"), gate, stage_timeout).await?;
                Some(match asked {
                    Ok(()) => Input::Given,
                    Err((st, why)) => Input::AskFailed(st, why),
                })
            }
            Effect::EvaluateGate => {
                let failed = run.failed.load(Ordering::SeqCst);
                let gate = run.when(self.when.as_ref(), true, failed, &BTreeMap::new(), &self.scope);
                Some(Input::GateEvaluated(gate.map_err(|e| e.to_string())))
            }
            Effect::Start => {
                run.start(&mut self.node).await?;
                run.set_stage_status(id, Status::Running);
                None
            }
            Effect::Expand => {
                let per = 1 + looping::nodes_within(&self.s.spec.execution.steps);
                let expanded = run
                    .iterations(self.s.strategy.as_ref(), per, &BTreeMap::new(), &self.scope)
                    // A stage that deploys several services or to several environments runs once per target.
                    .and_then(|its| Ok((its, run.deploy_targets(self.s, &self.scope)?)));
                Some(Input::Expanded(match expanded {
                    Ok((its, None)) if its.len() == 1 && its[0].suffix.is_none() => {
                        self.single = true;
                        Ok(())
                    }
                    Ok((its, targets)) => {
                        let max = max_concurrency(self.s.strategy.as_ref(), its.len());
                        self.runs = Some(with_targets(its, targets, max));
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }))
            }
            Effect::RunChildren => Some(self.run_children().await?),
            Effect::RunRollback => Some(self.body.rollback(run).await?),
            Effect::Finish(mut end) => {
                self.body.close(run, &mut end).await;
                self.slot = None;
                if !end.status.is_good() && end.reason.is_none() {
                    end.reason = Some(format!("stage `{id}` ended {}", end.status));
                }
                self.node.outputs = run.stage_values(id);
                run.end_node(&mut self.node, end).await?;
                None
            }
            _ => None,
        })
    }
}

impl<'a> Perform for IterationRun<'a, '_> {
    fn shape(&self) -> Shape {
        // Its inputs are the stage's; its gate, the part of the `when` that reads the iteration; its rollback
        // steps a phase of its own.
        let rollback = !self.s.spec.execution.rollback_steps.is_empty();
        Shape { gated: false, body: lifecycle::Body::Children { rollback } }
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run: &'a Run<'_> = self.run;
        Ok(match effect {
            Effect::EvaluateGate => {
                let local = self.it.as_ref().map_or_else(BTreeMap::new, |(it, _)| it.local.clone());
                let failed = run.failed.load(Ordering::SeqCst);
                let scope = Scope::stage(&self.node.identifier);
                let gate = run.when(self.per_iteration, true, failed, &local, &scope);
                Some(Input::GateEvaluated(gate.map_err(|e| e.to_string())))
            }

            Effect::Start => {
                // Queued until a slot is free; a stage of several iterations holds none itself.
                self.slot = run.stage_slots.acquire().await.ok();
                run.start(&mut self.node).await?;
                None
            }

            Effect::RunChildren => {
                let Some((it, target)) = self.it.take() else { return Ok(None) };
                let at = (self.s, self.node.identifier.clone(), &self.node);
                Some(self.body.steps(run, at, it.local, target.as_ref()).await?)
            }
            Effect::RunRollback => Some(self.body.rollback(run).await?),
            Effect::Finish(mut end) => {
                self.body.close(run, &mut end).await;
                self.node.outputs = run.stage_values(&self.node.identifier);
                run.end_node(&mut self.node, end).await?;
                self.slot = None;
                None
            }

            other => run.common(&mut self.node, other).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn its(n: usize) -> Vec<Iteration> {
        (0..n).map(|i| Iteration { suffix: Some(i), local: BTreeMap::new(), label: None }).collect()
    }

    fn target(service: &str) -> Target {
        Target { service: Some(service.into()), env: None }
    }

    #[test]
    fn every_iteration_for_every_target() {
        let cases = [
            (2, None, 2, 2, 2),
            (1, Some((vec![target("api"), target("web")], true)), 1, 2, 2),
            (2, Some((vec![target("api"), target("web")], true)), 1, 4, 2),
            (3, Some((vec![target("api"), target("web")], false)), 3, 6, 1),
        ];
        for (n, targets, max, want_runs, want_max) in cases {
            let (runs, at_once) = with_targets(its(n), targets.clone(), max);
            assert_eq!((runs.len(), at_once), (want_runs, want_max), "{n} iterations, {targets:?}");
            // Numbered in order, each with a target when there are targets.
            assert!(runs.iter().enumerate().all(|(i, (it, _))| it.suffix == Some(i)) || targets.is_none());
            assert!(runs.iter().all(|(_, t)| t.is_some() == targets.is_some()));
        }
    }
}
