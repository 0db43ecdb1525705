//! Why a node could not do its work, as data: what the engine writes as the node's failure is the
//! [`NodeError`]'s text, but the engine decides on its kind, never on words.

use crate::looping::LoopError;

/// A node's own failure before or around its work (an expression, a variable, an entity, a strategy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// An expression could not be evaluated; the text names it and says why.
    #[error("{0}")]
    Expression(String),
    /// A secret the pipeline reads is not given.
    #[error("secret `{id}` is not defined: give it with --secrets-file or PIPEWRIGHT_SECRET_{}", id.to_ascii_uppercase().replace(['.', '-'], "_"))]
    MissingSecret {
        /// The secret's identifier.
        id: String,
    },
    /// A `Secret` variable's value is an expression that resolves to a secret's value, not to an identifier.
    #[error(
        "is a Secret variable whose value resolves to a secret's value; give the secret's identifier instead (e.g. `account.gh_token`), not <+secrets.getValue(…)>"
    )]
    SecretValueNotIdentifier,
    /// A `Number` variable's value is not a number.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// A required variable has no value.
    #[error("is required but has no value")]
    Required,
    /// A service, environment or infrastructure definition the stage names is not defined.
    #[error(
        "{kind} `{id}` is not defined: put its YAML in a .harness/ folder next to the pipeline or give --entities DIR"
    )]
    UndefinedEntity {
        /// `service`, `environment`, `infrastructure definition`.
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// A stage propagates (`useFromStage`) from a stage that did not run.
    #[error("stage `{stage}` has not run in this execution, so its {key} cannot be propagated (useFromStage)")]
    NotPropagated {
        /// The stage it propagates from.
        stage: String,
        /// What it propagates (`service`, `env`, …).
        key: &'static str,
    },
    /// A stage that deploys several services or to several environments cannot say what it deploys.
    #[error("{0}")]
    Targets(String),
    /// The looping strategy has nothing to run.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// The error of a named part (`stage variable `region``).
    #[error("{what} `{name}`: {source}")]
    In {
        /// What the part is.
        what: &'static str,
        /// Its name.
        name: String,
        /// Its error.
        source: Box<NodeError>,
    },
}

impl From<String> for NodeError {
    /// An expression's error, as the evaluator words it.
    fn from(message: String) -> Self {
        NodeError::Expression(message)
    }
}

impl NodeError {
    /// This error as the error of a named part.
    pub fn within(self, what: &'static str, name: &str) -> NodeError {
        NodeError::In { what, name: name.to_string(), source: Box::new(self) }
    }
}
