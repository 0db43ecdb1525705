//! Templates: any string field of a pipeline, split into literal text, `<+ … >` expression segments and
//! runtime-input markers, with the byte range of each segment so diagnostics can point at it.

use crate::ast::Expr;
use crate::input::{RuntimeInput, parse_runtime_input_at};
use crate::parser::{ParseError, Parser};
use std::ops::Range;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text taken as it is.
    Literal(String),
    /// A `<+ … >` segment: the expression inside it and the byte range of the whole segment.
    Expr(Expr, Range<usize>),
    /// A `<+input>…` runtime-input marker and its byte range.
    Input(RuntimeInput, Range<usize>),
}

/// A parsed string value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// The pieces, in order.
    pub segments: Vec<Segment>,
}

impl Template {
    /// True when the string holds no expression and no runtime input.
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The runtime input, when the whole value is one `<+input>` marker.
    pub fn runtime_input(&self) -> Option<&RuntimeInput> {
        match self.segments.as_slice() {
            [Segment::Input(i, _)] => Some(i),
            _ => None,
        }
    }

    /// Every expression segment.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Expr(e, _) => Some(e),
            _ => None,
        })
    }
}

/// Split a string into literal text and `<+ … >` segments. A runtime input (`<+input>…`) must be the whole
/// value (surrounding whitespace aside), as in Harness.
pub fn parse_template(src: &str) -> Result<Template, ParseError> {
    let mut segments = Vec::new();
    let mut pos = 0;
    while let Some(found) = src[pos..].find("<+") {
        let at = pos + found;
        if at > pos {
            segments.push(Segment::Literal(src[pos..at].to_string()));
        }
        if src[at + 2..].starts_with("input>") {
            let (input, end) = parse_runtime_input_at(src, at)?;
            if !src[..at].trim().is_empty() || !src[end..].trim().is_empty() {
                return Err(ParseError {
                    message: "a runtime input `<+input>` must be the whole field value; move the surrounding text into an expression or a separate variable".into(),
                    offset: at,
                });
            }
            segments.clear();
            segments.push(Segment::Input(input, at..end));
            return Ok(Template { segments });
        }
        let mut p = Parser::new(src, at + 2);
        let (expr, end) = p.parse_group_body(at)?;
        segments.push(Segment::Expr(expr, at..end));
        pos = end;
    }
    if pos < src.len() {
        segments.push(Segment::Literal(src[pos..].to_string()));
    }
    Ok(Template { segments })
}
