//! The one driver loop: a node's phase goes through `lifecycle::advance`, each effect it returns is carried
//! out by the node's [`Perform`], and what that learnt is the next input — until the node has ended.

use super::{Res, Run};
use crate::lifecycle::{self, Effect, End, Input, Phase, Shape};
use store::{Node, Status};

/// What carries out a node's effects.
pub(super) trait Perform {
    /// The parts of the lifecycle the node has.
    fn shape(&self) -> Shape;
    /// Carry out one effect; the effect that waits for something answers with what it learnt.
    async fn perform(&mut self, effect: Effect) -> Res<Option<Input>>;
}

/// Drive a node from `first` (its `Begin`, `Settled` or `Resumed`) to its end.
pub(super) async fn drive<P: Perform>(node: &mut P, first: Input) -> Res<End> {
    let mut phase = Phase::Queued;
    let mut input = first;
    loop {
        let (next, effects) = lifecycle::advance(&phase, node.shape(), input);
        phase = next;
        let mut answer = None;
        for e in effects {
            if let Some(i) = node.perform(e).await? {
                answer = Some(i);
            }
        }
        if let Phase::Ended(end) = phase {
            return Ok(end);
        }
        input = match answer {
            Some(i) => i,
            // A phase that waits got no answer: the driver's own mistake, ended as a failure, never a hang.
            None => return Ok(End::new(Status::Failed, Some(format!("internal: no input for {phase:?}")))),
        };
    }
}

impl Run<'_> {
    /// How a node is entered: ended already (a resumed run finds it so), or reached now.
    pub(super) fn reached(&self, node: &Node) -> Input {
        match node.status.is_final() {
            true => Input::Settled(End::new(node.status, None)),
            false => Input::Begin { aborted: self.aborted() },
        }
    }

    /// The effects a container answers the same way unless it has its own: its gate lets it run (a looping
    /// node's `when` is its iterations'), it asks nothing, it has nothing to expand, and it is recorded when it
    /// starts and when it ends. Any other effect does nothing.
    pub(super) async fn common(&self, node: &mut Node, effect: Effect) -> Res<Option<Input>> {
        Ok(match effect {
            Effect::EvaluateGate => Some(Input::GateEvaluated(Ok(None))),
            Effect::Ask(_) => Some(Input::Given),
            Effect::Expand => Some(Input::Expanded(Ok(()))),
            Effect::Start => {
                self.start(node).await?;
                None
            }
            Effect::Finish(end) => {
                self.end_node(node, end).await?;
                None
            }
            _ => None,
        })
    }

    /// Record a node's end: a skip with its reason, anything else with its failure.
    pub(super) async fn end_node(&self, node: &mut Node, end: End) -> Res<()> {
        if end.status == Status::Skipped {
            self.skip(node, end.reason.unwrap_or_default()).await?;
        } else {
            self.finish(node, end.status, end.reason).await?;
        }
        Ok(())
    }
}
