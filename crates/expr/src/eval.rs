//! Evaluation of expressions, conditions and templates against a context. A reference that cannot be resolved
//! is an error naming the path, never an empty string; a value produced by evaluation is data and is never
//! parsed again as an expression.

use crate::ast::{BinaryOp, Expr, ExprKind, PathSeg, UnaryOp, path_to_string};
use crate::parser::{ParseError, parse_condition};
use crate::refs::{Scope, resolve_path};
use crate::template::{Segment, Template};
use crate::value::Value;
use std::collections::BTreeMap;
use std::ops::Range;

/// Where evaluation finds the values that references name.
pub trait Context {
    /// The value at a path as written (relative forms included); `None` when nothing is there.
    fn lookup(&self, path: &[PathSeg]) -> Option<Value>;
    /// The value of secret `id` (`<+secrets.getValue("id")>`).
    fn secret(&self, _id: &str) -> Option<String> {
        None
    }
}

/// A context over a value tree rooted at `{pipeline: …, stage: …, matrix: …, …}`; relative stage and step
/// paths are resolved against `scope` first, exactly as [`crate::references`] resolves them.
#[derive(Debug, Clone, Default)]
pub struct MapContext {
    /// The tree.
    pub root: Value,
    /// Where the evaluated expression sits.
    pub scope: Scope,
    /// Secret values by identifier.
    pub secrets: BTreeMap<String, String>,
}

impl Context for MapContext {
    fn lookup(&self, path: &[PathSeg]) -> Option<Value> {
        let relative = matches!(
            path.first(),
            Some(PathSeg::Name(n)) if matches!(n.as_str(), "stage" | "execution" | "steps" | "stepGroup")
        );
        if relative && self.scope.stage.is_some() {
            let written: Vec<String> = path.iter().map(ToString::to_string).collect();
            let full = resolve_path(&written, &self.scope);
            let mut v = &self.root;
            for seg in &full {
                v = v.get(seg)?;
            }
            return Some(v.clone());
        }
        let mut v = &self.root;
        for seg in path {
            v = match seg {
                PathSeg::Name(n) | PathSeg::Spliced { written: n, .. } => v.get(n)?,
                PathSeg::Index(i) => match v {
                    Value::List(l) => l.get(*i)?,
                    other => other.get(&i.to_string())?,
                },
            };
        }
        Some(v.clone())
    }

    fn secret(&self, id: &str) -> Option<String> {
        self.secrets.get(id).cloned()
    }
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A reference with no value.
    #[error("unresolved expression <+{path}>: nothing has that value here")]
    Unresolved {
        /// The path as written.
        path: String,
        /// Byte range in the source.
        span: Range<usize>,
    },
    /// A secret that is not defined.
    #[error("secret `{id}` is not defined")]
    UnknownSecret {
        /// Its identifier.
        id: String,
        /// Byte range in the source.
        span: Range<usize>,
    },
    /// An operator or method applied to the wrong kind of value.
    #[error("{message}")]
    Type {
        /// What went wrong.
        message: String,
        /// Byte range in the source.
        span: Range<usize>,
    },
    /// A runtime input that has not been given a value.
    #[error("runtime input has no value: give one with --input or an input set")]
    InputNotSupplied {
        /// Byte range in the source.
        span: Range<usize>,
    },
    /// A condition that did not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
}

fn type_err<T>(span: &Range<usize>, message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::Type { message: message.into(), span: span.clone() })
}

/// Evaluate one expression.
pub fn evaluate(expr: &Expr, ctx: &dyn Context) -> Result<Value, EvalError> {
    let span = &expr.span;
    match &expr.kind {
        ExprKind::Literal(v) => Ok(v.clone()),
        ExprKind::Path(segs) => {
            // Spliced names first: their expressions' values become part of the name.
            let mut resolved = Vec::with_capacity(segs.len());
            for s in segs {
                resolved.push(match s {
                    PathSeg::Spliced { pieces, .. } => {
                        let mut name = String::new();
                        for p in pieces {
                            match p {
                                crate::ast::Piece::Text(t) => name.push_str(t),
                                crate::ast::Piece::Expr(e) => name.push_str(&evaluate(e, ctx)?.to_string()),
                            }
                        }
                        PathSeg::Name(name)
                    }
                    other => other.clone(),
                });
            }
            ctx.lookup(&resolved)
                .ok_or_else(|| EvalError::Unresolved { path: path_to_string(&resolved), span: span.clone() })
        }
        ExprKind::Group(e) => evaluate(e, ctx),
        ExprKind::List(items) => Ok(Value::List(items.iter().map(|e| evaluate(e, ctx)).collect::<Result<_, _>>()?)),
        ExprKind::Unary(UnaryOp::Not, e) => Ok(Value::Bool(!evaluate(e, ctx)?.truthy())),
        ExprKind::Unary(UnaryOp::Neg, e) => match evaluate(e, ctx)? {
            Value::Int(i) => i.checked_neg().map(Value::Int).map_or_else(|| type_err(span, "integer overflow"), Ok),
            v => match v.as_f64() {
                Some(f) => Ok(Value::Float(-f)),
                None => type_err(span, format!("cannot negate a {}", v.type_name())),
            },
        },
        ExprKind::Binary(op, a, b) => binary(*op, a, b, span, ctx),
        ExprKind::Ternary(c, a, b) => {
            if evaluate(c, ctx)?.truthy() {
                evaluate(a, ctx)
            } else {
                evaluate(b, ctx)
            }
        }
        ExprKind::Call { target, method, args } => call(target, method, args, span, ctx),
        ExprKind::Member(target, name) => {
            let v = evaluate(target, ctx)?;
            v.get(name)
                .cloned()
                .ok_or_else(|| EvalError::Unresolved { path: format!("(…).{name}"), span: span.clone() })
        }
        ExprKind::Index(target, idx) => {
            let v = evaluate(target, ctx)?;
            let i = evaluate(idx, ctx)?;
            let key = match &i {
                Value::Int(n) if *n >= 0 => n.to_string(),
                Value::String(s) => s.clone(),
                other => return type_err(span, format!("cannot index with a {}", other.type_name())),
            };
            v.get(&key)
                .cloned()
                .ok_or_else(|| EvalError::Unresolved { path: format!("(…)[{key}]"), span: span.clone() })
        }
    }
}

fn binary(op: BinaryOp, a: &Expr, b: &Expr, span: &Range<usize>, ctx: &dyn Context) -> Result<Value, EvalError> {
    match op {
        BinaryOp::And => {
            return Ok(Value::Bool(evaluate(a, ctx)?.truthy() && evaluate(b, ctx)?.truthy()));
        }
        BinaryOp::Or => {
            return Ok(Value::Bool(evaluate(a, ctx)?.truthy() || evaluate(b, ctx)?.truthy()));
        }
        _ => {}
    }
    let x = evaluate(a, ctx)?;
    let y = evaluate(b, ctx)?;
    match op {
        BinaryOp::Eq => Ok(Value::Bool(x.loose_eq(&y))),
        BinaryOp::Ne => Ok(Value::Bool(!x.loose_eq(&y))),
        BinaryOp::Match | BinaryOp::NotMatch => {
            let m = match &y {
                Value::List(items) => items.iter().any(|i| i.loose_eq(&x)),
                Value::String(re) => match regex::RegexBuilder::new(&format!("^(?:{re})$")).size_limit(1 << 20).build()
                {
                    Ok(r) => r.is_match(&x.to_string()),
                    Err(e) => return type_err(span, format!("`{re}` is not a valid regular expression: {e}")),
                },
                other => {
                    return type_err(
                        span,
                        format!("`=~` needs a pattern or a list on its right, not a {}", other.type_name()),
                    );
                }
            };
            Ok(Value::Bool(if op == BinaryOp::Match { m } else { !m }))
        }
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let ord = match (&x, &y) {
                (Value::String(s), Value::String(t)) => s.cmp(t),
                _ => match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => match p.partial_cmp(&q) {
                        Some(o) => o,
                        None => return Ok(Value::Bool(false)),
                    },
                    _ => {
                        return type_err(
                            span,
                            format!(
                                "cannot compare a {} with a {} using `{}`",
                                x.type_name(),
                                y.type_name(),
                                op.symbol()
                            ),
                        );
                    }
                },
            };
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match op {
                BinaryOp::Lt => ord == Less,
                BinaryOp::Le => ord != Greater,
                BinaryOp::Gt => ord == Greater,
                _ => ord != Less,
            }))
        }
        BinaryOp::Add if matches!(x, Value::String(_)) || matches!(y, Value::String(_)) => {
            Ok(Value::String(format!("{x}{y}")))
        }
        _ => arithmetic(op, &x, &y, span),
    }
}

fn arithmetic(op: BinaryOp, x: &Value, y: &Value, span: &Range<usize>) -> Result<Value, EvalError> {
    if let (Value::Int(p), Value::Int(q)) = (x, y) {
        let r = match op {
            BinaryOp::Add => p.checked_add(*q),
            BinaryOp::Sub => p.checked_sub(*q),
            BinaryOp::Mul => p.checked_mul(*q),
            BinaryOp::Div | BinaryOp::Rem if *q == 0 => return type_err(span, "division by zero"),
            BinaryOp::Div => p.checked_div(*q),
            _ => p.checked_rem(*q),
        };
        return r.map(Value::Int).map_or_else(|| type_err(span, "integer overflow"), Ok);
    }
    let (Some(p), Some(q)) = (x.as_f64(), y.as_f64()) else {
        return type_err(
            span,
            format!("`{}` needs numbers, found a {} and a {}", op.symbol(), x.type_name(), y.type_name()),
        );
    };
    let r = match op {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p - q,
        BinaryOp::Mul => p * q,
        BinaryOp::Div | BinaryOp::Rem if q == 0.0 => return type_err(span, "division by zero"),
        BinaryOp::Div => p / q,
        _ => p % q,
    };
    Ok(if r.fract() == 0.0 && r.abs() < 9.0e15 { Value::Int(r as i64) } else { Value::Float(r) })
}

fn call(
    target: &Expr,
    method: &str,
    args: &[Expr],
    span: &Range<usize>,
    ctx: &dyn Context,
) -> Result<Value, EvalError> {
    if let ExprKind::Path(t) = &target.kind
        && let [PathSeg::Name(ns)] = t.as_slice()
        && (ns == "secrets" || ns == "json")
    {
        let vals = args.iter().map(|a| evaluate(a, ctx)).collect::<Result<Vec<_>, _>>()?;
        return namespace_call(ns, method, &vals, span, ctx);
    }
    let recv = evaluate(target, ctx)?;
    let vals = args.iter().map(|a| evaluate(a, ctx)).collect::<Result<Vec<_>, _>>()?;
    method_call(&recv, method, &vals, span)
}

fn namespace_call(
    ns: &str,
    method: &str,
    args: &[Value],
    span: &Range<usize>,
    ctx: &dyn Context,
) -> Result<Value, EvalError> {
    match (ns, method, args) {
        ("secrets", "getValue", [Value::String(id)]) => ctx
            .secret(id)
            .map(Value::String)
            .ok_or_else(|| EvalError::UnknownSecret { id: id.clone(), span: span.clone() }),
        ("json", "object", [v]) => parse_json(&v.to_string(), span),
        ("json", "format", [v]) => Ok(Value::String(serde_json::to_string(v).unwrap_or_default())),
        ("json", "select" | "list", [Value::String(path), doc]) => {
            let mut v = match doc {
                Value::String(s) => parse_json(s, span)?,
                other => other.clone(),
            };
            for seg in path.split('.').filter(|s| !s.is_empty()) {
                v = v
                    .get(seg)
                    .cloned()
                    .ok_or_else(|| EvalError::Unresolved { path: format!("json {path}"), span: span.clone() })?;
            }
            Ok(v)
        }
        _ => type_err(
            span,
            format!(
                "unknown function `{ns}.{method}` with {} argument(s); expected secrets.getValue(\"id\"), json.object(s), json.select(path, s), json.list(path, s) or json.format(v)",
                args.len()
            ),
        ),
    }
}

fn parse_json(s: &str, span: &Range<usize>) -> Result<Value, EvalError> {
    serde_json::from_str::<serde_json::Value>(s)
        .map(Value::from)
        .or_else(|e| type_err(span, format!("not valid JSON: {e}")))
}

fn arg_str<'a>(
    args: &'a [Value],
    i: usize,
    method: &str,
    span: &Range<usize>,
) -> Result<std::borrow::Cow<'a, str>, EvalError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(std::borrow::Cow::Borrowed(s)),
        Some(v @ (Value::Int(_) | Value::Float(_) | Value::Bool(_))) => Ok(std::borrow::Cow::Owned(v.to_string())),
        Some(v) => type_err(span, format!("`.{method}()` argument {} must be text, found a {}", i + 1, v.type_name())),
        None => type_err(span, format!("`.{method}()` needs argument {}", i + 1)),
    }
}

fn arg_int(args: &[Value], i: usize, method: &str, span: &Range<usize>) -> Result<i64, EvalError> {
    match args.get(i).and_then(Value::as_f64) {
        Some(f) if f.fract() == 0.0 => Ok(f as i64),
        _ => type_err(span, format!("`.{method}()` argument {} must be a whole number", i + 1)),
    }
}

fn method_call(recv: &Value, method: &str, args: &[Value], span: &Range<usize>) -> Result<Value, EvalError> {
    let arity = |n: usize| -> Result<(), EvalError> {
        if args.len() == n {
            Ok(())
        } else {
            type_err(span, format!("`.{method}()` takes {n} argument(s), got {}", args.len()))
        }
    };
    match (recv, method) {
        (Value::List(l), "contains") => {
            arity(1)?;
            Ok(Value::Bool(l.iter().any(|v| v.loose_eq(&args[0]))))
        }
        (Value::List(l), "length" | "size") => Ok(Value::Int(l.len() as i64)),
        (Value::List(l), "isEmpty") => Ok(Value::Bool(l.is_empty())),
        (Value::List(l), "indexOf") => {
            arity(1)?;
            Ok(Value::Int(l.iter().position(|v| v.loose_eq(&args[0])).map_or(-1, |p| p as i64)))
        }
        (Value::List(l), "get") => {
            arity(1)?;
            let i = arg_int(args, 0, method, span)?;
            l.get(i as usize).cloned().map_or_else(|| type_err(span, format!("index {i} is out of range")), Ok)
        }
        (Value::Map(m), "size" | "length") => Ok(Value::Int(m.len() as i64)),
        (Value::Map(m), "containsKey") => Ok(Value::Bool(m.contains_key(arg_str(args, 0, method, span)?.as_ref()))),
        (_, "equals") => {
            arity(1)?;
            Ok(Value::Bool(recv.loose_eq(&args[0])))
        }
        (_, "toString") => Ok(Value::String(recv.to_string())),
        (Value::Null, _) => type_err(span, format!("cannot call `.{method}()` on null")),
        (Value::List(_) | Value::Map(_), _) => {
            type_err(span, format!("unknown method `.{method}()` for a {}", recv.type_name()))
        }
        _ => string_method(&recv.to_string(), method, args, span, arity),
    }
}

fn string_method(
    s: &str,
    method: &str,
    args: &[Value],
    span: &Range<usize>,
    arity: impl Fn(usize) -> Result<(), EvalError>,
) -> Result<Value, EvalError> {
    let chars = || s.chars().collect::<Vec<_>>();
    let char_index = |byte: Option<usize>| byte.map_or(-1, |b| s[..b].chars().count() as i64);
    Ok(match method {
        "contains" => Value::Bool(s.contains(arg_str(args, 0, method, span)?.as_ref())),
        "startsWith" => Value::Bool(s.starts_with(arg_str(args, 0, method, span)?.as_ref())),
        "endsWith" => Value::Bool(s.ends_with(arg_str(args, 0, method, span)?.as_ref())),
        "equalsIgnoreCase" => Value::Bool(s.eq_ignore_ascii_case(arg_str(args, 0, method, span)?.as_ref())),
        "split" => {
            let sep = arg_str(args, 0, method, span)?;
            if sep.is_empty() {
                Value::List(s.chars().map(|c| Value::String(c.to_string())).collect())
            } else {
                Value::List(s.split(sep.as_ref()).map(|p| Value::String(p.to_string())).collect())
            }
        }
        "length" | "size" => {
            arity(0)?;
            Value::Int(s.chars().count() as i64)
        }
        "isEmpty" => Value::Bool(s.is_empty()),
        "toUpperCase" => Value::String(s.to_uppercase()),
        "toLowerCase" => Value::String(s.to_lowercase()),
        "trim" => Value::String(s.trim().to_string()),
        "replace" => {
            arity(2)?;
            Value::String(s.replace(arg_str(args, 0, method, span)?.as_ref(), arg_str(args, 1, method, span)?.as_ref()))
        }
        "concat" => Value::String(format!("{s}{}", arg_str(args, 0, method, span)?)),
        "indexOf" => Value::Int(char_index(s.find(arg_str(args, 0, method, span)?.as_ref()))),
        "lastIndexOf" => Value::Int(char_index(s.rfind(arg_str(args, 0, method, span)?.as_ref()))),
        "charAt" => {
            let i = arg_int(args, 0, method, span)?;
            match chars().get(i as usize) {
                Some(c) if i >= 0 => Value::String(c.to_string()),
                _ => {
                    return type_err(
                        span,
                        format!("`.charAt({i})` is out of range for a string of length {}", chars().len()),
                    );
                }
            }
        }
        "substring" => {
            let cs = chars();
            let start = arg_int(args, 0, method, span)?;
            let end = if args.len() > 1 { arg_int(args, 1, method, span)? } else { cs.len() as i64 };
            if start < 0 || end < start || end as usize > cs.len() {
                return type_err(
                    span,
                    format!("`.substring({start}, {end})` is out of range for a string of length {}", cs.len()),
                );
            }
            Value::String(cs[start as usize..end as usize].iter().collect())
        }
        _ => {
            return type_err(
                span,
                format!(
                    "unknown method `.{method}()`; expected one of contains, startsWith, endsWith, split, length, toUpperCase, toLowerCase, trim, replace, substring, indexOf, lastIndexOf, concat, equals, equalsIgnoreCase, charAt, isEmpty, toString"
                ),
            );
        }
    })
}

/// Parse and evaluate a condition string (see [`parse_condition`]) to a boolean.
pub fn evaluate_condition(src: &str, ctx: &dyn Context) -> Result<bool, EvalError> {
    let e = parse_condition(src)?;
    Ok(evaluate(&e, ctx)?.truthy())
}

/// Render a template: literal text as it is, each `<+ … >` replaced by its value's text. The result is final:
/// it is never parsed for expressions again.
pub fn render(t: &Template, ctx: &dyn Context) -> Result<String, EvalError> {
    let mut out = String::new();
    for seg in &t.segments {
        match seg {
            Segment::Literal(s) => out.push_str(s),
            Segment::Expr(e, _) => {
                use std::fmt::Write;
                let v = evaluate(e, ctx)?;
                let _ = write!(out, "{v}");
            }
            Segment::Input(_, span) => return Err(EvalError::InputNotSupplied { span: span.clone() }),
        }
    }
    Ok(out)
}
