//! A step with a looping strategy carried through the node lifecycle: its node holds the iterations (each a
//! step of its own, `id_0`, `id_1`, …, gated by the step's `when`), expanded when it starts and run up to
//! `maxConcurrency` at a time.

use super::drive::{self, Perform};
use super::{Res, Run, StageCx, fan_out, max_concurrency};
use crate::lifecycle::{Body, Effect, End, Input, Shape};
use crate::looping::Iteration;
use spec::{Step, StepGroup};
use store::{Node, NodeKind};

/// A looping step being driven.
struct LoopStepRun<'a, 'p> {
    run: &'a Run<'p>,
    cx: &'a StageCx<'p>,
    s: &'p Step,
    groups: &'a [(&'p StepGroup, String)],
    path: &'a str,
    rollback: bool,
    node: Node,
    iterations: Vec<Iteration>,
}

impl<'p> Run<'p> {
    /// Run a step: as itself, or, with a looping strategy, as its iterations under one node.
    pub(super) async fn step_with_strategy(
        &self,
        cx: &StageCx<'p>,
        s: &'p Step,
        groups: Vec<(&'p StepGroup, String)>,
        parent: &str,
        path: &str,
        rollback: bool,
    ) -> Res<End> {
        let sid = s.identifier.value.as_str();
        if s.strategy.is_none() {
            return self.step(cx, s, sid.to_string(), &groups, parent, path, rollback, cx.local.clone()).await;
        }
        let node = self.new_node(Some(parent), NodeKind::Step, sid, &s.name, &format!("{path}.{sid}"));
        let first = self.reached(&node);
        let mut l = LoopStepRun { run: self, cx, s, groups: &groups, path, rollback, node, iterations: vec![] };
        let end = drive::drive(&mut l, first).await?;
        let mut tp = self.tree_path(cx, &groups, sid, rollback);
        tp.push("status".into());
        self.set_tree(
            &tp.iter().map(String::as_str).collect::<Vec<_>>(),
            expr::Value::String(end.status.expression_value().into()),
        );
        Ok(end)
    }
}

impl Perform for LoopStepRun<'_, '_> {
    fn shape(&self) -> Shape {
        // Its `when` and inputs are each iteration's.
        Shape { gated: false, body: Body::Children { rollback: false } }
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run = self.run;
        Ok(match effect {
            Effect::Expand => {
                let scope = run.scope_of(self.cx, self.groups);
                let expanded = run.iterations(self.s.strategy.as_ref(), 1, &self.cx.local, &scope);
                Some(Input::Expanded(expanded.map(|its| self.iterations = its).map_err(|e| e.to_string())))
            }
            Effect::RunChildren => {
                let iterations = std::mem::take(&mut self.iterations);
                let max = max_concurrency(self.s.strategy.as_ref(), iterations.len());
                let (sid, node_id) = (self.s.identifier.value.as_str(), self.node.id.clone());
                let (cx, s, groups, path, rollback) = (self.cx, self.s, self.groups, self.path, self.rollback);
                let each = |it: Iteration| {
                    let iid = format!("{sid}_{}", it.suffix.unwrap_or(0));
                    run.step(cx, s, iid, groups, &node_id, path, rollback, it.local)
                };
                // Each iteration's end is the stage's to learn as it comes (a later one's gate reads it).
                let all = fan_out(iterations, max, each, |end| cx.learn(end)).await?;
                Some(Input::children(&all, false, false))
            }

            other => run.common(&mut self.node, other).await?,
        })
    }
}
