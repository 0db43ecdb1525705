//! A step group carried through the node lifecycle: its inputs and `when`, its iterations when it loops
//! (each a node of its own, gated by the part of the `when` that reads the iteration), and its steps, run
//! under its timeout; what the stage learns from its end.

use super::drive::{self, Perform};
use super::{Res, Run, StageCx, fan_out, max_concurrency, split_when, yaml_path};
use crate::lifecycle::{Body, Effect, End, Input, Shape, Signal};
use crate::looping::{self, Iteration};
use expr::{Scope, Value};
use spec::{StepGroup, When};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use store::{Node, NodeKind, Status};

/// Where a group is: its stage, the groups around it, its parent node and path, rollback or not.
#[derive(Clone, Copy)]
struct Place<'a, 'p> {
    cx: &'a StageCx<'p>,
    g: &'p StepGroup,
    groups: &'a [(&'p StepGroup, String)],
    path: &'a str,
    rollback: bool,
}

/// A step group being driven.
struct GroupRun<'a, 'p> {
    run: &'a Run<'p>,
    at: Place<'a, 'p>,
    node: Node,
    scope: Scope,
    owner: String,
    /// The part of the `when` each iteration evaluates (it reads the iteration).
    per_iteration: Option<When>,
    when: Option<When>,
    iterations: Vec<Iteration>,
}

/// One iteration of a looping group, as a node of its own.
struct IterationRun<'a, 'p> {
    run: &'a Run<'p>,
    at: Place<'a, 'p>,
    node: Node,
    it: Option<Iteration>,
    per_iteration: Option<&'a When>,
    scope: &'a Scope,
}

impl<'p> Run<'p> {
    /// Run a step group to its end; its status.
    pub(super) async fn group_with_strategy(
        &self,
        cx: &StageCx<'p>,
        g: &'p StepGroup,
        groups: Vec<(&'p StepGroup, String)>,
        parent: &str,
        path: &str,
        rollback: bool,
    ) -> Res<End> {
        let gid = g.identifier.value.as_str();
        let gpath = format!("{path}.{gid}");
        let node = self.new_node(Some(parent), NodeKind::StepGroup, gid, &g.name, &gpath);
        let first = self.reached(&node);
        let (when, per_iteration) = split_when(g.when.as_ref(), g.strategy.is_some());
        let at = Place { cx, g, groups: &groups, path, rollback };
        let mut gr = GroupRun {
            run: self,
            at,
            node,
            scope: self.scope_of(cx, &groups),
            owner: yaml_path(cx, &groups, gid, rollback),
            per_iteration,
            when,
            iterations: Vec::new(),
        };
        let settled = matches!(first, Input::Settled(_));
        let end = drive::drive(&mut gr, first).await?;
        if !settled {
            let mut tp = self.tree_path(cx, &groups, gid, rollback);
            tp.push("status".into());
            self.set_tree(
                &tp.iter().map(String::as_str).collect::<Vec<_>>(),
                Value::String(end.status.expression_value().into()),
            );
        }
        Ok(end)
    }

    /// A group's steps for one iteration (`it.suffix` none: the group itself), under `parent_id` at `ipath`,
    /// within the group's timeout; how its steps ended and whether the timeout ran out. The stage learns the
    /// iteration's failure and its steps' requests for the stage's rollback.
    async fn group_body(&self, at: Place<'_, 'p>, it: Iteration, parent_id: &str, ipath: &str) -> Res<(End, bool)> {
        let (cx, g) = (at.cx, at.g);
        let gid = g.identifier.value.as_str();
        let iid = it.suffix.map_or(gid.to_string(), |i| format!("{gid}_{i}"));
        let sub = cx.within(it.local);
        let mut inner = at.groups.to_vec();
        inner.push((g, iid.clone()));
        // `<+stepGroup.identifierPostFix>`: what this iteration's identifier adds to the group's.
        let mut here = self.tree_path(cx, &inner[..inner.len() - 1], &iid, at.rollback);
        here.push("identifierPostFix".into());
        let postfix = it.suffix.map_or(String::new(), |i| format!("_{i}"));
        self.set_tree(&here.iter().map(String::as_str).collect::<Vec<_>>(), Value::String(postfix));
        let body = self.elements(&sub, &g.steps, inner, parent_id, ipath, at.rollback);
        let (mut end, timed_out) = match g.timeout.as_ref().and_then(|t| t.as_std()) {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(r) => (r?, false),
                Err(_) => {
                    self.expire_running(&format!("{ipath}.")).await?;
                    (End::new(Status::Expired, None), true)
                }
            },
            None => (body.await?, false),
        };
        if sub.rollback.load(Ordering::SeqCst) {
            end.signal = Some(Signal::StageRollback);
        }
        cx.learn(&end);
        end.signal = None;
        Ok((end, timed_out))
    }
}

impl Perform for GroupRun<'_, '_> {
    fn shape(&self) -> Shape {
        Shape::GROUP
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run = self.run;
        let cx = self.at.cx;
        let timeout = self.at.g.timeout.as_ref().and_then(|t| t.as_std());
        Ok(match effect {
            Effect::Ask(ask) => {
                let asked =
                    run.ask(Some(&mut self.node), &self.owner, ask == crate::lifecycle::Ask::Gate, timeout).await?;
                Some(match asked {
                    Ok(()) => Input::Given,
                    Err((st, why)) => Input::AskFailed(st, why),
                })
            }
            Effect::EvaluateGate => {
                let gate =
                    run.when(self.when.as_ref(), false, cx.failed.load(Ordering::SeqCst), &cx.local, &self.scope);
                Some(Input::GateEvaluated(gate.map_err(|e| e.to_string())))
            }

            Effect::Expand => {
                let per = 1 + looping::nodes_within(&self.at.g.steps);
                let expanded = run.iterations(self.at.g.strategy.as_ref(), per, &cx.local, &self.scope);
                Some(Input::Expanded(expanded.map(|its| self.iterations = its).map_err(|e| e.to_string())))
            }
            Effect::RunChildren => {
                let iterations = std::mem::take(&mut self.iterations);
                let max = max_concurrency(self.at.g.strategy.as_ref(), iterations.len());
                let gpath = format!("{}.{}", self.at.path, self.at.g.identifier.value);
                let (at, node_id, per_iteration, scope) =
                    (self.at, &self.node.id, self.per_iteration.as_ref(), &self.scope);
                let timed_out = AtomicBool::new(false);
                let each = |it: Iteration| {
                    let (gpath, timed_out) = (&gpath, &timed_out);
                    async move {
                        let Some(i) = it.suffix else {
                            // Not looping: the group's steps under its own node.
                            let (end, t) = run.group_body(at, it, node_id, gpath).await?;
                            timed_out.fetch_or(t, Ordering::SeqCst);
                            return Ok(end);
                        };
                        let gid = &at.g.identifier.value;
                        let iid = format!("{gid}_{i}");
                        let ipath = format!("{gpath}_{i}");
                        let name = it.label.as_ref().map_or_else(
                            || format!("{} {iid}", at.g.name.value),
                            |values| format!("{} ({values})", at.g.name.value),
                        );
                        let node = run.new_node(Some(node_id), NodeKind::StepGroup, &iid, &name, &ipath);
                        let first = run.reached(&node);
                        let mut ir = IterationRun { run, at, node, it: Some(it), per_iteration, scope };
                        drive::drive(&mut ir, first).await
                    }
                };
                // The iterations' ends were learnt by the stage as each body ended (`group_body`).
                let all = fan_out(iterations, max, each, |_| {}).await?;
                let (worst, by_abort) = (all.status, all.by_abort);
                Some(Input::ChildrenEnded { worst, by_abort, rollback: false, timed_out: timed_out.into_inner() })
            }

            other => run.common(&mut self.node, other).await?,
        })
    }
}

impl Perform for IterationRun<'_, '_> {
    fn shape(&self) -> Shape {
        // Its inputs are the group's; its gate, the part of the `when` that reads the iteration.
        Shape { gated: false, body: Body::Children { rollback: false } }
    }

    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>> {
        let run = self.run;
        Ok(match effect {
            Effect::EvaluateGate => {
                let local = self.it.as_ref().map_or_else(BTreeMap::new, |it| it.local.clone());
                let gate =
                    run.when(self.per_iteration, false, self.at.cx.failed.load(Ordering::SeqCst), &local, self.scope);
                Some(Input::GateEvaluated(gate.map_err(|e| e.to_string())))
            }

            Effect::RunChildren => {
                let Some(it) = self.it.take() else { return Ok(Some(Input::Expanded(Ok(())))) };
                let (node_id, path) = (self.node.id.clone(), self.node.path.clone());
                let (end, timed_out) = run.group_body(self.at, it, &node_id, &path).await?;
                Some(Input::children(&end, false, timed_out))
            }

            other => run.common(&mut self.node, other).await?,
        })
    }
}
