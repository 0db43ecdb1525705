//! The `<+…>` expression language of Harness pipelines. This crate owns the lexer and parser for expressions
//! and templates (strings mixing literal text with `<+ … >` segments), runtime-input markers
//! (`<+input>.default(…).allowedValues(…)…`), static reference extraction with relative paths resolved against
//! the stage / step group they sit in, and evaluation against a value tree. It knows nothing about stages as
//! runtime objects: it sees paths and values only.

mod ast;
mod eval;
mod input;
mod parser;
mod refs;
mod template;
mod value;

pub use ast::{BinaryOp, Expr, ExprKind, PathSeg, Piece, UnaryOp};
pub use eval::{Context, EvalError, MapContext, evaluate, evaluate_condition, render};
pub use input::{InputError, RuntimeInput, parse_runtime_input};
pub use parser::{ParseError, parse_condition, parse_expression};
pub use refs::{Reference, Scope, references, resolve_path};
pub use template::{Segment, Template, parse_template};
pub use value::Value;
