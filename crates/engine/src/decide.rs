//! What a failure leads to, as pure functions with table tests: which failure strategy applies to a failed
//! attempt (innermost first: the step's, its step groups', the stage's; the first whose `errors` match), what
//! it does next — another attempt after an interval, a wait for a person, or an ending — and what each ending
//! and each person's choice means; the `when` status gate; and how children's statuses roll up into their
//! parent's. The engine (`run.rs`) only carries out what these return.

use spec::{Action, ErrorType, FailureStrategy, StatusCondition};
use std::time::Duration;
use store::Status;

/// A person's choice for a step waiting in `InterventionWaiting`: one type for the CLI, the API and the
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum InterventionAction {
    /// Run the step again.
    Retry,
    /// Ignore the failure (`IgnoreFailed`).
    Ignore,
    /// Abort the execution.
    Abort,
    /// Mark the step `Success`.
    MarkSuccess,
    /// Mark the step `Failed`.
    MarkFailure,
}

impl InterventionAction {
    /// Every action, in the order they are offered.
    pub const ALL: [InterventionAction; 5] = [
        InterventionAction::Retry,
        InterventionAction::Ignore,
        InterventionAction::Abort,
        InterventionAction::MarkSuccess,
        InterventionAction::MarkFailure,
    ];

    /// The name stored with a decision and given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            InterventionAction::Retry => "retry",
            InterventionAction::Ignore => "ignore",
            InterventionAction::Abort => "abort",
            InterventionAction::MarkSuccess => "mark-success",
            InterventionAction::MarkFailure => "mark-failure",
        }
    }
}

impl InterventionAction {
    /// The choice a stored decision makes for a failed step's wait; none for a decision that answers another
    /// wait (an approval's, an input's).
    pub fn of(a: store::DecisionAction) -> Option<InterventionAction> {
        use store::DecisionAction as D;
        match a {
            D::Retry => Some(InterventionAction::Retry),
            D::Ignore => Some(InterventionAction::Ignore),
            D::Abort => Some(InterventionAction::Abort),
            D::MarkSuccess => Some(InterventionAction::MarkSuccess),
            D::MarkFailure => Some(InterventionAction::MarkFailure),
            D::Approve | D::Reject | D::Provide => None,
        }
    }

    /// The stored decision for this choice.
    pub fn decision(self) -> store::DecisionAction {
        use store::DecisionAction as D;
        match self {
            InterventionAction::Retry => D::Retry,
            InterventionAction::Ignore => D::Ignore,
            InterventionAction::Abort => D::Abort,
            InterventionAction::MarkSuccess => D::MarkSuccess,
            InterventionAction::MarkFailure => D::MarkFailure,
        }
    }
}

impl std::fmt::Display for InterventionAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InterventionAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        InterventionAction::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            format!(
                "unknown intervention action `{s}`; expected one of {}",
                InterventionAction::ALL.map(InterventionAction::as_str).join(", ")
            )
        })
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Another attempt after `after` (retry `retry` of `of`).
    Retry {
        /// The interval before it.
        after: Duration,
        /// Which retry this is, from 1.
        retry: u32,
        /// How many the strategy allows.
        of: u32,
    },
    /// Wait for a person's decision; with no decision within `timeout`, `on_timeout` applies.
    AskPerson {
        /// How long to wait (none: for ever).
        timeout: Option<Duration>,
        /// How the step ends when nobody decides in time.
        on_timeout: Ending,
    },
    /// The step ends.
    End(Ending),
}

/// How a failed step ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With the attempt's own status (no strategy, or `MarkAsFailure`).
    AsFailed,
    /// `IgnoreFailed`: the stage goes on.
    IgnoreFailed,
    /// `Success`.
    MarkedSuccess,
    /// Failed, and the execution is aborted.
    Abort,
    /// Failed, and the stage's rollback steps run.
    StageRollback,
    /// Failed, and the rollback steps of every stage that ran run, in reverse.
    PipelineRollback,
}

impl Ending {
    /// The step's final status, given the failed attempt's.
    pub fn status(self, failed: Status) -> Status {
        match self {
            Ending::IgnoreFailed => Status::IgnoreFailed,
            Ending::MarkedSuccess => Status::Success,
            _ => failed,
        }
    }
}

/// The action of the first strategy (innermost first) whose `errors` match `error`.
pub fn matching(strategies: &[&FailureStrategy], error: ErrorType) -> Option<Action> {
    strategies
        .iter()
        .find(|fs| fs.on_failure.errors.iter().any(|e| *e == ErrorType::AllErrors || *e == error))
        .map(|fs| fs.on_failure.action.clone())
}

/// What an action means for a failed attempt after `retries_done` retries.
pub fn next(action: Option<Action>, retries_done: u32) -> Next {
    match action {
        Some(Action::Retry(r)) if retries_done < r.retry_count => {
            let at = (retries_done as usize).min(r.retry_intervals.len().saturating_sub(1));
            let after = r.retry_intervals.get(at).and_then(|d| d.as_std()).unwrap_or(Duration::ZERO);
            Next::Retry { after, retry: retries_done + 1, of: r.retry_count }
        }
        // Retries used up: what the strategy says then (never another retry).
        Some(Action::Retry(r)) => match r.on_retry_failure.action.clone() {
            Action::Retry(_) => Next::End(Ending::AsFailed),
            other => next(Some(other), u32::MAX),
        },
        Some(Action::ManualIntervention(mi)) => Next::AskPerson {
            timeout: mi.timeout.as_ref().and_then(|t| t.as_std()),
            on_timeout: timed_out(&mi.on_timeout.action),
        },
        Some(a) => Next::End(ending(&a)),
        None => Next::End(Ending::AsFailed),
    }
}

/// How an action other than Retry and ManualIntervention ends a step.
pub fn ending(a: &Action) -> Ending {
    match a {
        Action::Ignore => Ending::IgnoreFailed,
        Action::MarkAsSuccess => Ending::MarkedSuccess,
        Action::Abort => Ending::Abort,
        Action::StageRollback => Ending::StageRollback,
        Action::PipelineRollback => Ending::PipelineRollback,
        Action::MarkAsFailure | Action::Retry(_) | Action::ManualIntervention(_) => Ending::AsFailed,
    }
}

/// What a person's choice means: another attempt (`None`), or how the step ends.
pub fn chosen(a: InterventionAction) -> Option<Ending> {
    match a {
        InterventionAction::Retry => None,
        InterventionAction::Ignore => Some(Ending::IgnoreFailed),
        InterventionAction::Abort => Some(Ending::Abort),
        InterventionAction::MarkSuccess => Some(Ending::MarkedSuccess),
        InterventionAction::MarkFailure => Some(Ending::AsFailed),
    }
}

/// What applies when nobody decided before the timeout (a timeout's own retry or wait is not repeated).
pub fn timed_out(on_timeout: &Action) -> Ending {
    ending(on_timeout)
}

/// The status part of a `when`: why a stage (`is_stage`) or step is skipped, given whether something before
/// it failed; none when it runs (its `condition`, if any, is evaluated after). The default is `Success`.
pub fn status_gate(when: Option<StatusCondition>, is_stage: bool, failed: bool) -> Option<String> {
    let what = if is_stage { "an earlier stage failed" } else { "an earlier step of the stage failed" };
    match when.unwrap_or(StatusCondition::Success) {
        StatusCondition::Success if failed => Some(format!("{what} (runs on Success)")),
        StatusCondition::Failure if !failed => Some("nothing failed (runs on Failure)".into()),
        _ => None,
    }
}

/// The status of a parent from two of its children's (applied over all of them): the worst wins —
/// aborted, expired, rejected, failed, waiting, ignored; folded from `Success`, a parent whose children all
/// succeeded or were skipped succeeded.
pub fn worst(a: Status, b: Status) -> Status {
    fn rank(s: Status) -> u8 {
        match s {
            Status::Success | Status::Skipped | Status::Queued | Status::Running | Status::Paused => 0,
            Status::IgnoreFailed => 1,
            Status::ApprovalWaiting | Status::InterventionWaiting | Status::InputWaiting => 2,
            Status::Failed => 4,
            Status::ApprovalRejected => 5,
            Status::Expired => 6,
            Status::Aborted => 7,
        }
    }
    let (a, b) = if a == Status::Skipped && b == Status::Success { (b, a) } else { (a, b) };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategies(yaml: &str) -> Vec<FailureStrategy> {
        let doc = spec::parse_document(
            "t.yaml",
            format!(
                "pipeline:\n  name: t\n  identifier: t\n  stages:\n    - stage:\n        name: s\n        identifier: s\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: x\n                  identifier: x\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: exit 1\n                  failureStrategies:\n{}",
                yaml.lines().map(|l| format!("                    {l}\n")).collect::<String>()
            ),
        );
        assert!(doc.is_valid(), "{}", doc.render_diagnostics());
        let p = doc.pipeline().unwrap();
        let steps = p.all_stages()[0].spec.execution.steps.clone();
        match &steps[0] {
            spec::ExecutionElement::Step(s) => s.failure_strategies.clone(),
            _ => unreachable!(),
        }
    }

    const RETRY_THEN_IGNORE: &str = "- onFailure:\n    errors: [AllErrors]\n    action:\n      type: Retry\n      spec:\n        retryCount: 2\n        retryIntervals: [1s, 5s]\n        onRetryFailure:\n          action:\n            type: Ignore\n";
    const TIMEOUT_ONLY_MI: &str = "- onFailure:\n    errors: [Timeout]\n    action:\n      type: ManualIntervention\n      spec:\n        timeout: 2m\n        onTimeout:\n          action:\n            type: MarkAsSuccess\n- onFailure:\n    errors: [AllErrors]\n    action:\n      type: Abort\n";

    #[test]
    fn what_a_failed_attempt_leads_to() {
        let retry = strategies(RETRY_THEN_IGNORE);
        let mi = strategies(TIMEOUT_ONLY_MI);
        let r: Vec<&FailureStrategy> = retry.iter().collect();
        let m: Vec<&FailureStrategy> = mi.iter().collect();
        let cases: Vec<(&[&FailureStrategy], ErrorType, u32, Next)> = vec![
            (&[], ErrorType::Unknown, 0, Next::End(Ending::AsFailed)),
            (&r, ErrorType::Unknown, 0, Next::Retry { after: Duration::from_secs(1), retry: 1, of: 2 }),
            (&r, ErrorType::Timeout, 1, Next::Retry { after: Duration::from_secs(5), retry: 2, of: 2 }),
            // Intervals past the list repeat the last one; used up, onRetryFailure decides.
            (&r, ErrorType::Unknown, 2, Next::End(Ending::IgnoreFailed)),
            (
                &m,
                ErrorType::Timeout,
                0,
                Next::AskPerson { timeout: Some(Duration::from_secs(120)), on_timeout: Ending::MarkedSuccess },
            ),
            // The first strategy whose errors match: a non-timeout failure falls through to AllErrors.
            (&m, ErrorType::Unknown, 0, Next::End(Ending::Abort)),
        ];
        for (s, error, done, want) in cases {
            assert_eq!(next(matching(s, error), done), want, "{error:?} after {done} retries");
        }
    }

    #[test]
    fn the_when_status_gate() {
        use StatusCondition::*;
        let cases = [
            (None, true, false, None),
            (None, true, true, Some("an earlier stage failed (runs on Success)")),
            (None, false, true, Some("an earlier step of the stage failed (runs on Success)")),
            (Some(Success), false, false, None),
            (Some(Failure), true, false, Some("nothing failed (runs on Failure)")),
            (Some(Failure), true, true, None),
            (Some(All), true, true, None),
            (Some(All), false, false, None),
        ];
        for (when, stage, failed, want) in cases {
            assert_eq!(status_gate(when, stage, failed).as_deref(), want, "{when:?} stage={stage} failed={failed}");
        }
    }

    #[test]
    fn children_roll_up_to_the_worst() {
        use Status::*;
        let cases = [
            (&[Success, Success][..], Success),
            (&[Success, Skipped], Success),
            (&[Skipped, Skipped], Success),
            (&[Success, IgnoreFailed], IgnoreFailed),
            (&[IgnoreFailed, Failed, Success], Failed),
            (&[Failed, ApprovalRejected], ApprovalRejected),
            (&[Expired, Failed], Expired),
            (&[Failed, Aborted, Expired], Aborted),
        ];
        for (children, want) in cases {
            assert_eq!(children.iter().copied().fold(Success, worst), want, "{children:?}");
        }
    }

    #[test]
    fn endings_and_choices() {
        let cases = [
            (Action::Ignore, Ending::IgnoreFailed, Status::IgnoreFailed),
            (Action::MarkAsSuccess, Ending::MarkedSuccess, Status::Success),
            (Action::MarkAsFailure, Ending::AsFailed, Status::Failed),
            (Action::Abort, Ending::Abort, Status::Failed),
            (Action::StageRollback, Ending::StageRollback, Status::Failed),
            (Action::PipelineRollback, Ending::PipelineRollback, Status::Failed),
        ];
        for (a, e, st) in cases {
            assert_eq!(ending(&a), e);
            assert_eq!(e.status(Status::Failed), st);
            assert_eq!(timed_out(&a), e);
        }
        let choices = [
            ("retry", None),
            ("ignore", Some(Ending::IgnoreFailed)),
            ("abort", Some(Ending::Abort)),
            ("mark-success", Some(Ending::MarkedSuccess)),
            ("mark-failure", Some(Ending::AsFailed)),
        ];
        for (name, want) in choices {
            let a: InterventionAction = name.parse().unwrap();
            assert_eq!(a.as_str(), name);
            assert_eq!(chosen(a), want);
        }
        assert!("skip".parse::<InterventionAction>().unwrap_err().contains("retry, ignore, abort"));
    }

    #[test]
    fn every_status_has_a_harness_expression_value_validate_knows() {
        for st in Status::ALL {
            assert!(spec::STATUS_VALUES.contains(&st.expression_value()), "{st}: {}", st.expression_value());
        }
    }
}
