//! The one node lifecycle. Every node of an execution — a stage, a stage iteration, a step group, a group
//! iteration, a looping step, a step, a rollback — goes through the phases below, decided by one pure
//! function, [`advance`], and carried out by the driver, which performs each [`Effect`] and feeds what it
//! learnt back as the next [`Input`]. Nothing here does I/O; the failure branch is `decide`'s.
//!
//! ```text
//!              Settled (not selected, reused, ended before a resume) ─────────────────────────▶ Ended
//!   Queued ─Begin─▶ aborted? ─────────────────────────────────────────────────────────────────▶ Ended Skipped
//!     │
//!     ▼ the inputs its `when` reads            the status gate and the condition
//!   Asking(Gate) ──Given──▶ Gated ──run──▶ Asking(Body) ──Given──▶ Running
//!        │ AskFailed            │ skip / error                    │
//!        ▼                      ▼                                 ├─ containers ─Expand─▶ Children
//!      Ended                  Ended                               │    ChildrenEnded ─▶ (RollingBack) ─▶ Ended (roll-up)
//!                                                                 └─ steps ─RunWork─▶ Working{attempt}
//!                                 Reported: success ─▶ Ended; lost ─▶ Working{attempt+1};
//!                                 failed ─▶ decide::next: Retry ─▶ RetryPending ─Slept─▶ Working{attempt+1}
//!                                                         AskPerson ─▶ Waiting ─Decided / TimedOut─▶ …
//!                                                         End ─▶ Ended (with a signal: abort, rollback)
//! ```
//!
//! A node resumed after its process died enters through [`Input::Resumed`] with what the store holds: a
//! step that was running has its attempt closed as interrupted and runs again (the interrupted attempt
//! counts as a retry); a step waiting for a person keeps waiting; everything else starts over from its gate,
//! on the same node.

use crate::decide::{self, Ending, InterventionAction, Next};
use spec::{Action, ErrorType};
use std::time::Duration;
use store::Status;

/// Attempts a step may lose to executors that went away before it ends failed.
pub const MAX_LOST: u32 = 3;

/// Why a node skipped by an abort says so.
pub const ABORTED: &str = "the execution was aborted";

/// What a node holds: other nodes, or work of its own (a step's attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Children: a stage's steps, a group's, a looping node's iterations.
    Children {
        /// It has rollback steps to run when a child asks for the stage's rollback.
        rollback: bool,
    },
    /// A step's attempts.
    Work,
}

/// The parts of the lifecycle a node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Its own `when` and `.executionInput()` fields (a looping node's iterations share the node's; a stage
    /// iteration evaluates only the part of the `when` that reads its iteration).
    pub gated: bool,
    /// What it holds.
    pub body: Body,
}

impl Shape {
    /// A step (or a step iteration): gated, with attempts.
    pub const STEP: Shape = Shape { gated: true, body: Body::Work };
    /// A container with its own gate.
    pub const GROUP: Shape = Shape { gated: true, body: Body::Children { rollback: false } };
}

/// Which inputs an ask is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Those the node's `when` reads: asked before the gate.
    Gate,
    /// The rest: asked once the node runs.
    Body,
}

/// Where a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Made, not started.
    Queued,
    /// Waiting for `.executionInput()` values.
    Asking(Ask),
    /// Its `when` is being evaluated.
    Gated,
    /// A container's children are being expanded (looping strategies, deployment targets).
    Expanding,
    /// A container's children run.
    Children,
    /// A container's rollback steps run.
    RollingBack {
        /// How the children ended, which the node ends with.
        worst: Status,
    },
    /// A step's attempt runs.
    Working(Attempt),
    /// A failed attempt waits for its retry interval.
    RetryPending(Attempt),
    /// A failed attempt waits for a person's decision; `on_timeout` applies when none comes in time.
    Waiting {
        /// The attempt that failed.
        attempt: Attempt,
        /// Its status, which the step ends with unless the decision says otherwise.
        failed: Status,
        /// Why it failed.
        reason: Option<String>,
        /// How the step ends when nobody decides in time.
        on_timeout: Ending,
    },
    /// Ended.
    Ended(End),
}

/// A step's attempt count, retries used and attempts lost to executors that went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt, from 1.
    pub n: u32,
    /// Retries its failure strategy used so far.
    pub retries: u32,
    /// Attempts lost so far.
    pub lost: u32,
}

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt { n: 1, retries: 0, lost: 0 };

    fn next(self) -> Attempt {
        Attempt { n: self.n + 1, ..self }
    }
}

/// What a node's end asks of the nodes above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Abort the execution.
    Abort,
    /// Run the stage's rollback steps.
    StageRollback,
    /// Run the rollback steps of every stage that ran, in reverse.
    PipelineRollback,
}

/// How a node ended: what its parent learns from it.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// Its status.
    pub status: Status,
    /// Why (a failure, a skip).
    pub reason: Option<String>,
    /// It was skipped or cut short because the execution was aborted.
    pub by_abort: bool,
    /// What it asks of the nodes above it.
    pub signal: Option<Signal>,
}

impl End {
    /// An end with a status and a reason.
    pub fn new(status: Status, reason: Option<String>) -> End {
        End { status, reason, by_abort: false, signal: None }
    }

    fn aborted(status: Status) -> End {
        End { status, reason: Some(ABORTED.into()), by_abort: true, signal: None }
    }
}

/// A stored node a resumed run finds.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// It was running (or queued to run) an attempt when its process died.
    Interrupted(Attempt),
    /// Its attempt failed and it was waiting for a person.
    AwaitingDecision {
        /// The attempt.
        attempt: Attempt,
        /// The failed attempt's status.
        failed: Status,
        /// Why it failed.
        reason: Option<String>,
        /// How it ends when nobody decides in time.
        on_timeout: Ending,
    },
    /// Anything else not ended (a container running, a node waiting for inputs or an approval): it starts
    /// over from its gate on the same node; what ended inside it stays.
    Again,
}

/// How a step's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The attempt's status.
    pub status: Status,
    /// Why it failed.
    pub reason: Option<String>,
    /// Its failure type.
    pub error: ErrorType,
    /// Whoever ran it went away.
    pub lost: bool,
}

/// Why an attempt is closed while its step goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Its failure strategy retries it.
    Retry,
    /// Whoever ran it went away.
    Lost,
    /// A person chose to retry it.
    Chosen,
}

/// What the driver learnt.
#[derive(Debug, Clone)]
pub enum Input {
    /// The node is reached; whether the execution is aborted.
    Begin {
        /// The execution was aborted.
        aborted: bool,
    },
    /// The node ends without running: not selected, reused from another execution, or ended before a resume.
    Settled(End),
    /// A resumed run found the node not ended.
    Resumed(Resume),
    /// The inputs asked were given (or there were none).
    Given,
    /// The ask ended without them (aborted, timed out).
    AskFailed(Status, String),
    /// The `when`: none to run, a skip reason, or an error evaluating it.
    GateEvaluated(Result<Option<String>, String>),
    /// The children were expanded, or could not be.
    Expanded(Result<(), String>),
    /// Every child ended: the worst status, whether the abort cut any of them short, whether one asked for the
    /// stage's rollback, whether the node timed out.
    ChildrenEnded {
        /// The worst of their statuses (`decide::worst`).
        worst: Status,
        /// A child was skipped or cut short by the abort.
        by_abort: bool,
        /// A child asked for the stage's rollback.
        rollback: bool,
        /// The node's own timeout ran out.
        timed_out: bool,
    },
    /// The rollback steps ended.
    RolledBack,
    /// An attempt ended, with the failure strategy action that matches it (`decide::matching`).
    Reported(Report, Option<Action>),
    /// The retry interval passed; whether the execution was aborted meanwhile.
    Slept {
        /// The execution was aborted.
        aborted: bool,
    },
    /// A person decided.
    Decided(InterventionAction),
    /// Nobody decided in time.
    TimedOut,
    /// The execution was aborted while the node waited for a person.
    Aborted,
}

impl Input {
    /// A container's children ended as `all` (`Ended` rolled up), asking for the stage's rollback or not.
    pub fn children(all: &End, rollback: bool, timed_out: bool) -> Input {
        Input::ChildrenEnded { worst: all.status, by_abort: all.by_abort, rollback, timed_out }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Record the node as started (`Running`), before anything runs in it.
    Start,
    /// Ask for the node's missing `.executionInput()` values; answers `Given` or `AskFailed`.
    Ask(Ask),
    /// Evaluate the `when`; answers `GateEvaluated`.
    EvaluateGate,
    /// Expand the children; answers `Expanded`.
    Expand,
    /// Run the children; answers `ChildrenEnded`.
    RunChildren,
    /// Run the rollback steps; answers `RolledBack`.
    RunRollback,
    /// Close the attempt that failed with this status and reason, saying why another follows.
    CloseAttempt(Status, Option<String>, Close),
    /// Close the attempt the process that died left running: stop what it left, record it interrupted.
    CloseInterrupted,
    /// Run an attempt; answers `Reported`.
    RunWork(Attempt),
    /// Say a retry comes and wait for it; answers `Slept`.
    Sleep {
        /// The interval.
        after: Duration,
        /// Which retry.
        retry: u32,
        /// Of how many.
        of: u32,
    },
    /// Record the node waiting for a person and wait; answers `Decided`, `TimedOut` or `Aborted`.
    AwaitDecision,
    /// Tell the nodes above.
    Signal(Signal),
    /// Record the node's end.
    Finish(End),
}

/// The next phase of a node of `shape` in `phase` given `input`, and the effects to carry out, in order.
/// An input a phase does not expect leaves the node where it is and asks for nothing (a driver bug, caught
/// by the table tests, never a panic).
pub fn advance(phase: &Phase, shape: Shape, input: Input) -> (Phase, Vec<Effect>) {
    use Effect as E;
    use Input as I;
    use Phase as P;
    let end = |e: End| (P::Ended(e.clone()), vec![E::Finish(e)]);
    match (phase, input) {
        (P::Queued, I::Settled(e)) => (P::Ended(e), vec![]),
        (P::Queued, I::Begin { aborted: true }) => end(End::aborted(Status::Skipped)),
        (P::Queued, I::Begin { aborted: false }) | (P::Queued, I::Resumed(Resume::Again)) => gate(shape),
        (P::Queued, I::Resumed(Resume::Interrupted(a))) => {
            // The interrupted attempt counts as a retry.
            let next = Attempt { n: a.n + 1, retries: a.n, lost: a.lost };
            (P::Working(next), vec![E::CloseInterrupted, E::RunWork(next)])
        }
        (P::Queued, I::Resumed(Resume::AwaitingDecision { attempt, failed, reason, on_timeout })) => {
            (P::Waiting { attempt, failed, reason, on_timeout }, vec![E::AwaitDecision])
        }
        (P::Asking(Ask::Gate), I::Given) => (P::Gated, vec![E::EvaluateGate]),
        (P::Asking(_), I::AskFailed(status, why)) => {
            let by_abort = status == Status::Aborted;
            end(End { status, reason: Some(why), by_abort, signal: None })
        }
        (P::Gated, I::GateEvaluated(Ok(None))) => (P::Asking(Ask::Body), vec![E::Start, E::Ask(Ask::Body)]),
        (P::Gated, I::GateEvaluated(Ok(Some(skip)))) => end(End::new(Status::Skipped, Some(skip))),
        (P::Gated, I::GateEvaluated(Err(e))) => end(End::new(Status::Failed, Some(e))),
        (P::Asking(Ask::Body), I::Given) => match shape.body {
            Body::Children { .. } => (P::Expanding, vec![E::Expand]),
            Body::Work => (P::Working(Attempt::FIRST), vec![E::RunWork(Attempt::FIRST)]),
        },
        (P::Expanding, I::Expanded(Ok(()))) => (P::Children, vec![E::RunChildren]),
        (P::Expanding, I::Expanded(Err(e))) => end(End::new(Status::Failed, Some(e))),
        (P::Children, I::ChildrenEnded { worst, by_abort, rollback, timed_out }) => {
            let worst = roll_up(worst, by_abort, timed_out);
            match shape.body {
                Body::Children { rollback: true } if rollback => (P::RollingBack { worst }, vec![E::RunRollback]),
                _ => end(rolled_up(worst, by_abort)),
            }
        }
        (P::RollingBack { worst }, I::RolledBack) => end(rolled_up(*worst, *worst == Status::Aborted)),
        (P::Working(a), I::Reported(r, action)) => reported(*a, r, action),
        (P::RetryPending(_), I::Slept { aborted: true }) => end(End::aborted(Status::Aborted)),
        (P::RetryPending(a), I::Slept { aborted: false }) => {
            let next = a.next();
            (P::Working(next), vec![E::RunWork(next)])
        }
        (P::Waiting { attempt, failed, reason, .. }, I::Decided(choice)) => match decide::chosen(choice) {
            None => {
                let next = attempt.next();
                (P::Working(next), vec![E::CloseAttempt(*failed, reason.clone(), Close::Chosen), E::RunWork(next)])
            }
            Some(ending) => ended(*failed, reason.clone(), ending),
        },
        (P::Waiting { failed, reason, on_timeout, .. }, I::TimedOut) => ended(*failed, reason.clone(), *on_timeout),
        (P::Waiting { .. }, I::Aborted) => end(End::aborted(Status::Aborted)),
        (p, _) => (p.clone(), vec![]),
    }
}

/// The first step of a node that is reached: its gate's inputs, or straight to running it.
fn gate(shape: Shape) -> (Phase, Vec<Effect>) {
    if shape.gated {
        (Phase::Asking(Ask::Gate), vec![Effect::Ask(Ask::Gate)])
    } else {
        (Phase::Gated, vec![Effect::EvaluateGate])
    }
}

/// A container's status from its children's worst: an abort that cut a child short makes a parent that
/// would otherwise end well `Aborted` (children all skipped after an abort are not a success); its own
/// timeout makes it `Expired`.
pub fn roll_up(worst: Status, by_abort: bool, timed_out: bool) -> Status {
    if timed_out {
        return decide::worst(worst, Status::Expired);
    }
    if by_abort && worst.is_good() {
        return Status::Aborted;
    }
    worst
}

fn rolled_up(status: Status, by_abort: bool) -> End {
    End { status, reason: None, by_abort: by_abort && status == Status::Aborted, signal: None }
}

/// What an attempt's report leads to.
fn reported(a: Attempt, r: Report, action: Option<Action>) -> (Phase, Vec<Effect>) {
    use Effect as E;
    if r.status == Status::Success {
        let e = End::new(Status::Success, None);
        return (Phase::Ended(e.clone()), vec![E::Finish(e)]);
    }
    if r.lost && a.lost < MAX_LOST {
        let next = Attempt { n: a.n + 1, lost: a.lost + 1, ..a };
        return (Phase::Working(next), vec![E::CloseAttempt(Status::Failed, r.reason, Close::Lost), E::RunWork(next)]);
    }
    if r.status == Status::Aborted {
        let e = End { status: Status::Aborted, reason: r.reason, by_abort: true, signal: None };
        return (Phase::Ended(e.clone()), vec![E::Finish(e)]);
    }
    match decide::next(action, a.retries) {
        Next::Retry { after, retry, of } => (
            Phase::RetryPending(Attempt { retries: retry, ..a }),
            vec![E::CloseAttempt(r.status, r.reason, Close::Retry), E::Sleep { after, retry, of }],
        ),
        Next::AskPerson { on_timeout, .. } => {
            (Phase::Waiting { attempt: a, failed: r.status, reason: r.reason, on_timeout }, vec![E::AwaitDecision])
        }
        Next::End(ending) => ended(r.status, r.reason, ending),
    }
}

/// A step's end from its failed attempt and the ending its strategy (or a person) chose.
fn ended(failed: Status, reason: Option<String>, ending: Ending) -> (Phase, Vec<Effect>) {
    let signal = match ending {
        Ending::Abort => Some(Signal::Abort),
        Ending::StageRollback => Some(Signal::StageRollback),
        Ending::PipelineRollback => Some(Signal::PipelineRollback),
        Ending::AsFailed | Ending::IgnoreFailed | Ending::MarkedSuccess => None,
    };
    let e = End { status: ending.status(failed), reason, by_abort: false, signal };
    let mut effects: Vec<Effect> = signal.map(Effect::Signal).into_iter().collect();
    effects.push(Effect::Finish(e.clone()));
    (Phase::Ended(e), effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect as E;
    use Input as I;
    use Phase as P;

    const CONTAINER: Shape = Shape::GROUP;
    const STAGE_WITH_ROLLBACK: Shape = Shape { gated: true, body: Body::Children { rollback: true } };
    const ITERATION: Shape = Shape { gated: false, body: Body::Children { rollback: false } };

    fn retry(count: u32) -> Option<Action> {
        Some(Action::Retry(spec::RetrySpec {
            retry_count: count,
            retry_intervals: vec![],
            on_retry_failure: Box::new(spec::ActionHolder { action: Action::MarkAsFailure }),
        }))
    }

    fn failed(error: ErrorType) -> Report {
        Report { status: Status::Failed, reason: Some("exit 1".into()), error, lost: false }
    }

    fn done(status: Status) -> End {
        End::new(status, None)
    }

    fn a(n: u32, retries: u32, lost: u32) -> Attempt {
        Attempt { n, retries, lost }
    }

    /// What a phase is given, and what it becomes with which effects.
    type Case = (&'static str, Phase, Shape, Input, Phase, Vec<Effect>);

    #[test]
    fn every_transition() {
        let intervention = Some(Action::ManualIntervention(spec::ManualInterventionSpec {
            timeout: None,
            on_timeout: Box::new(spec::ActionHolder { action: Action::MarkAsSuccess }),
        }));
        let waiting = P::Waiting {
            attempt: Attempt::FIRST,
            failed: Status::Failed,
            reason: Some("exit 1".into()),
            on_timeout: Ending::MarkedSuccess,
        };
        let success = Report { status: Status::Success, reason: None, error: ErrorType::Unknown, lost: false };
        let lost = Report { lost: true, ..failed(ErrorType::Unknown) };
        let aborted = Report { status: Status::Aborted, reason: Some(ABORTED.into()), ..failed(ErrorType::Unknown) };
        let abort_end = End::aborted(Status::Aborted);
        let skip_end = End::aborted(Status::Skipped);
        let children = |worst, by_abort, rollback, timed_out| I::ChildrenEnded { worst, by_abort, rollback, timed_out };
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Reaching a node.
            ("settled", P::Queued, Shape::STEP, I::Settled(done(Status::Skipped)), P::Ended(done(Status::Skipped)), vec![]),
            ("begin", P::Queued, Shape::STEP, I::Begin { aborted: false }, P::Asking(Ask::Gate), vec![E::Ask(Ask::Gate)]),
            ("begin ungated", P::Queued, ITERATION, I::Begin { aborted: false }, P::Gated, vec![E::EvaluateGate]),
            ("begin aborted", P::Queued, CONTAINER, I::Begin { aborted: true }, P::Ended(skip_end.clone()), vec![E::Finish(skip_end.clone())]),
            ("gate inputs", P::Asking(Ask::Gate), Shape::STEP, I::Given, P::Gated, vec![E::EvaluateGate]),
            ("gate inputs aborted", P::Asking(Ask::Gate), Shape::STEP, I::AskFailed(Status::Aborted, ABORTED.into()), P::Ended(abort_end.clone()), vec![E::Finish(abort_end.clone())]),
            ("gate inputs expired", P::Asking(Ask::Gate), Shape::STEP, I::AskFailed(Status::Expired, "late".into()), P::Ended(End::new(Status::Expired, Some("late".into()))), vec![E::Finish(End::new(Status::Expired, Some("late".into())))]),
            ("gate runs", P::Gated, Shape::STEP, I::GateEvaluated(Ok(None)), P::Asking(Ask::Body), vec![E::Start, E::Ask(Ask::Body)]),
            ("gate skips", P::Gated, Shape::STEP, I::GateEvaluated(Ok(Some("no".into()))), P::Ended(End::new(Status::Skipped, Some("no".into()))), vec![E::Finish(End::new(Status::Skipped, Some("no".into())))]),
            ("gate fails", P::Gated, CONTAINER, I::GateEvaluated(Err("bad".into())), P::Ended(End::new(Status::Failed, Some("bad".into()))), vec![E::Finish(End::new(Status::Failed, Some("bad".into())))]),
            ("body inputs aborted", P::Asking(Ask::Body), CONTAINER, I::AskFailed(Status::Aborted, ABORTED.into()), P::Ended(abort_end.clone()), vec![E::Finish(abort_end.clone())]),
            // Containers.
            ("expand", P::Asking(Ask::Body), CONTAINER, I::Given, P::Expanding, vec![E::Expand]),
            ("expanded", P::Expanding, CONTAINER, I::Expanded(Ok(())), P::Children, vec![E::RunChildren]),
            ("too many", P::Expanding, CONTAINER, I::Expanded(Err("big".into())), P::Ended(End::new(Status::Failed, Some("big".into()))), vec![E::Finish(End::new(Status::Failed, Some("big".into())))]),
            ("children well", P::Children, CONTAINER, children(Status::Success, false, false, false), P::Ended(done(Status::Success)), vec![E::Finish(done(Status::Success))]),
            ("children failed", P::Children, CONTAINER, children(Status::Failed, false, false, false), P::Ended(done(Status::Failed)), vec![E::Finish(done(Status::Failed))]),
            // Children all skipped after an abort: the parent is not a success.
            ("children skipped by abort", P::Children, ITERATION, children(Status::Success, true, false, false), P::Ended(End { by_abort: true, ..done(Status::Aborted) }), vec![E::Finish(End { by_abort: true, ..done(Status::Aborted) })]),
            ("children failed before abort", P::Children, CONTAINER, children(Status::Failed, true, false, false), P::Ended(done(Status::Failed)), vec![E::Finish(done(Status::Failed))]),
            ("timed out", P::Children, CONTAINER, children(Status::Success, false, false, true), P::Ended(done(Status::Expired)), vec![E::Finish(done(Status::Expired))]),
            ("rollback", P::Children, STAGE_WITH_ROLLBACK, children(Status::Failed, false, true, false), P::RollingBack { worst: Status::Failed }, vec![E::RunRollback]),
            ("no rollback steps", P::Children, CONTAINER, children(Status::Failed, false, true, false), P::Ended(done(Status::Failed)), vec![E::Finish(done(Status::Failed))]),
            ("rolled back", P::RollingBack { worst: Status::Failed }, STAGE_WITH_ROLLBACK, I::RolledBack, P::Ended(done(Status::Failed)), vec![E::Finish(done(Status::Failed))]),
            // Steps.
            ("work", P::Asking(Ask::Body), Shape::STEP, I::Given, P::Working(Attempt::FIRST), vec![E::RunWork(Attempt::FIRST)]),
            ("success", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(success, None), P::Ended(done(Status::Success)), vec![E::Finish(done(Status::Success))]),
            ("failure", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(failed(ErrorType::Unknown), None), P::Ended(End::new(Status::Failed, Some("exit 1".into()))), vec![E::Finish(End::new(Status::Failed, Some("exit 1".into())))]),
            ("retry", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(failed(ErrorType::Unknown), retry(2)), P::RetryPending(a(1, 1, 0)), vec![E::CloseAttempt(Status::Failed, Some("exit 1".into()), Close::Retry), E::Sleep { after: Duration::ZERO, retry: 1, of: 2 }]),
            ("slept", P::RetryPending(a(1, 1, 0)), Shape::STEP, I::Slept { aborted: false }, P::Working(a(2, 1, 0)), vec![E::RunWork(a(2, 1, 0))]),
            ("slept through an abort", P::RetryPending(a(1, 1, 0)), Shape::STEP, I::Slept { aborted: true }, P::Ended(abort_end.clone()), vec![E::Finish(abort_end.clone())]),
            ("retries used up", P::Working(a(3, 2, 0)), Shape::STEP, I::Reported(failed(ErrorType::Unknown), retry(2)), P::Ended(End::new(Status::Failed, Some("exit 1".into()))), vec![E::Finish(End::new(Status::Failed, Some("exit 1".into())))]),
            ("lost", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(lost.clone(), None), P::Working(a(2, 0, 1)), vec![E::CloseAttempt(Status::Failed, Some("exit 1".into()), Close::Lost), E::RunWork(a(2, 0, 1))]),
            ("lost too often", P::Working(a(4, 0, MAX_LOST)), Shape::STEP, I::Reported(lost, None), P::Ended(End::new(Status::Failed, Some("exit 1".into()))), vec![E::Finish(End::new(Status::Failed, Some("exit 1".into())))]),
            ("aborted while working", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(aborted, retry(3)), P::Ended(abort_end.clone()), vec![E::Finish(abort_end.clone())]),
            ("ask a person", P::Working(Attempt::FIRST), Shape::STEP, I::Reported(failed(ErrorType::Unknown), intervention), waiting.clone(), vec![E::AwaitDecision]),
            ("person retries", waiting.clone(), Shape::STEP, I::Decided(InterventionAction::Retry), P::Working(a(2, 0, 0)), vec![E::CloseAttempt(Status::Failed, Some("exit 1".into()), Close::Chosen), E::RunWork(a(2, 0, 0))]),
            ("person ignores", waiting.clone(), Shape::STEP, I::Decided(InterventionAction::Ignore), P::Ended(End::new(Status::IgnoreFailed, Some("exit 1".into()))), vec![E::Finish(End::new(Status::IgnoreFailed, Some("exit 1".into())))]),
            ("person aborts", waiting.clone(), Shape::STEP, I::Decided(InterventionAction::Abort), P::Ended(End { signal: Some(Signal::Abort), ..End::new(Status::Failed, Some("exit 1".into())) }), vec![E::Signal(Signal::Abort), E::Finish(End { signal: Some(Signal::Abort), ..End::new(Status::Failed, Some("exit 1".into())) })]),
            ("nobody decides", waiting.clone(), Shape::STEP, I::TimedOut, P::Ended(End::new(Status::Success, Some("exit 1".into()))), vec![E::Finish(End::new(Status::Success, Some("exit 1".into())))]),
            ("aborted while waiting", waiting.clone(), Shape::STEP, I::Aborted, P::Ended(abort_end.clone()), vec![E::Finish(abort_end.clone())]),
            // Resuming.
            ("resume interrupted", P::Queued, Shape::STEP, I::Resumed(Resume::Interrupted(a(1, 0, 0))), P::Working(a(2, 1, 0)), vec![E::CloseInterrupted, E::RunWork(a(2, 1, 0))]),
            ("resume waiting for a person", P::Queued, Shape::STEP, I::Resumed(Resume::AwaitingDecision { attempt: Attempt::FIRST, failed: Status::Failed, reason: Some("exit 1".into()), on_timeout: Ending::MarkedSuccess }), waiting.clone(), vec![E::AwaitDecision]),
            ("resume a container", P::Queued, CONTAINER, I::Resumed(Resume::Again), P::Asking(Ask::Gate), vec![E::Ask(Ask::Gate)]),
            ("resume ended", P::Queued, CONTAINER, I::Settled(done(Status::Failed)), P::Ended(done(Status::Failed)), vec![]),
            // An input a phase does not expect changes nothing.
            ("unexpected", P::Children, CONTAINER, I::Given, P::Children, vec![]),
            ("after the end", P::Ended(done(Status::Success)), Shape::STEP, I::Begin { aborted: false }, P::Ended(done(Status::Success)), vec![]),
        ];
        for (what, phase, shape, input, want_phase, want_effects) in cases {
            let (got_phase, got_effects) = advance(&phase, shape, input);
            assert_eq!((&got_phase, &got_effects), (&want_phase, &want_effects), "{what}");
        }
    }

    #[test]
    fn strategy_endings_signal_the_nodes_above() {
        let cases = [
            (Action::Abort, Some(Signal::Abort), Status::Failed),
            (Action::StageRollback, Some(Signal::StageRollback), Status::Failed),
            (Action::PipelineRollback, Some(Signal::PipelineRollback), Status::Failed),
            (Action::Ignore, None, Status::IgnoreFailed),
            (Action::MarkAsSuccess, None, Status::Success),
            (Action::MarkAsFailure, None, Status::Failed),
        ];
        for (action, signal, status) in cases {
            let (phase, effects) = advance(
                &Phase::Working(Attempt::FIRST),
                Shape::STEP,
                Input::Reported(failed(ErrorType::Unknown), Some(action.clone())),
            );
            let Phase::Ended(e) = phase else { panic!("{action:?} did not end the step") };
            assert_eq!((e.signal, e.status), (signal, status), "{action:?}");
            assert_eq!(effects.iter().any(|x| matches!(x, Effect::Signal(_))), signal.is_some(), "{action:?}");
        }
    }

    /// Whatever the abort finds a node doing, the node does not end `Success`: from every phase with the
    /// input an abort produces there, the node ends, and not well (a node skipped before it began excepted,
    /// which is Skipped, and which its parent rolls up as Aborted).
    #[test]
    fn an_abort_at_every_phase_leaves_no_node_ended_well() {
        let running =
            Report { status: Status::Aborted, reason: Some(ABORTED.into()), error: ErrorType::Unknown, lost: false };
        let waiting = P::Waiting {
            attempt: Attempt::FIRST,
            failed: Status::Failed,
            reason: Some("exit 1".into()),
            on_timeout: Ending::MarkedSuccess,
        };
        let cases: Vec<(Phase, Shape, Input)> = vec![
            (P::Queued, Shape::STEP, I::Begin { aborted: true }),
            (P::Asking(Ask::Gate), Shape::STEP, I::AskFailed(Status::Aborted, ABORTED.into())),
            (P::Asking(Ask::Body), CONTAINER, I::AskFailed(Status::Aborted, ABORTED.into())),
            (
                P::Children,
                CONTAINER,
                I::ChildrenEnded { worst: Status::Skipped, by_abort: true, rollback: false, timed_out: false },
            ),
            (
                P::Children,
                ITERATION,
                I::ChildrenEnded { worst: Status::Success, by_abort: true, rollback: false, timed_out: false },
            ),
            (P::Working(Attempt::FIRST), Shape::STEP, I::Reported(running, None)),
            (P::RetryPending(a(1, 1, 0)), Shape::STEP, I::Slept { aborted: true }),
            (waiting, Shape::STEP, I::Aborted),
        ];
        for (phase, shape, input) in cases {
            let what = format!("{phase:?} {input:?}");
            let (next, _) = advance(&phase, shape, input);
            let Phase::Ended(e) = next else { panic!("{what}: not ended") };
            assert!(e.by_abort, "{what}: {e:?}");
            assert!(e.status == Status::Skipped || e.status == Status::Aborted, "{what}: {e:?}");
            // Its parent, told a child ended by the abort, does not end well either.
            assert_eq!(roll_up(decide::worst(Status::Success, e.status), true, false), Status::Aborted, "{what}");
        }
    }

    #[test]
    fn roll_up_table() {
        let cases = [
            (Status::Success, false, false, Status::Success),
            (Status::Success, true, false, Status::Aborted),
            (Status::IgnoreFailed, true, false, Status::Aborted),
            (Status::Failed, true, false, Status::Failed),
            (Status::Success, false, true, Status::Expired),
            (Status::Aborted, false, true, Status::Aborted),
        ];
        for (worst, by_abort, timed_out, want) in cases {
            assert_eq!(roll_up(worst, by_abort, timed_out), want, "{worst} abort={by_abort} timeout={timed_out}");
        }
    }
}
