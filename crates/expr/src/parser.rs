//! The lexer and recursive-descent parser for one expression. Inside a `<+ … >` group the first `>` at the
//! group's own nesting level closes it (as in Harness), so comparisons there are written `gt` / `ge` or inside
//! parentheses; at the top level of a condition (`when.condition`) `>` is an operator.

use crate::ast::{BinaryOp, Expr, ExprKind, PathSeg, Piece, UnaryOp};
use crate::value::Value;
use std::ops::Range;

/// Deepest nesting of groups, parentheses and operators before the parser gives up (stack safety).
pub const MAX_DEPTH: usize = 64;

/// Why an expression did not parse, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What was expected and what was found.
    pub message: String,
    /// Byte offset in the source string.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Open,
    Gt,
    Ge,
    Lt,
    Le,
    EqEq,
    Ne,
    Match,
    NotMatch,
    AndAnd,
    OrOr,
    Not,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Question,
    Colon,
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eof,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::Str(_) => "a string".into(),
        Tok::Open => "`<+`".into(),
        Tok::Eof => "the end of the expression".into(),
        other => format!("`{}`", tok_text(other)),
    }
}

fn tok_text(t: &Tok) -> &'static str {
    match t {
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::EqEq => "==",
        Tok::Ne => "!=",
        Tok::Match => "=~",
        Tok::NotMatch => "!~",
        Tok::AndAnd => "&&",
        Tok::OrOr => "||",
        Tok::Not => "!",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Question => "?",
        Tok::Colon => ":",
        Tok::Dot => ".",
        Tok::Comma => ",",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        _ => "?",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Group,
    Nested,
}

pub(crate) struct Parser<'s> {
    src: &'s str,
    pos: usize,
    peeked: Option<(Tok, Range<usize>)>,
    ctx: Vec<Ctx>,
    depth: usize,
}

impl<'s> Parser<'s> {
    pub(crate) fn new(src: &'s str, pos: usize) -> Self {
        Parser { src, pos, peeked: None, ctx: Vec::new(), depth: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.peeked.as_ref().map_or(self.pos, |p| p.1.start)
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { message: message.into(), offset })
    }

    fn lex(&mut self) -> Result<(Tok, Range<usize>), ParseError> {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&c) = bytes.get(start) else {
            return Ok((Tok::Eof, start..start));
        };
        let two = bytes.get(start + 1).copied();
        let (tok, len) = match (c, two) {
            (b'<', Some(b'+')) => (Tok::Open, 2),
            (b'<', Some(b'=')) => (Tok::Le, 2),
            (b'<', _) => (Tok::Lt, 1),
            (b'>', Some(b'=')) => (Tok::Ge, 2),
            (b'>', _) => (Tok::Gt, 1),
            (b'=', Some(b'=')) => (Tok::EqEq, 2),
            (b'=', Some(b'~')) => (Tok::Match, 2),
            (b'!', Some(b'=')) => (Tok::Ne, 2),
            (b'!', Some(b'~')) => (Tok::NotMatch, 2),
            (b'!', _) => (Tok::Not, 1),
            (b'&', Some(b'&')) => (Tok::AndAnd, 2),
            (b'|', Some(b'|')) => (Tok::OrOr, 2),
            (b'+', _) => (Tok::Plus, 1),
            (b'-', _) => (Tok::Minus, 1),
            (b'*', _) => (Tok::Star, 1),
            (b'/', _) => (Tok::Slash, 1),
            (b'%', _) => (Tok::Percent, 1),
            (b'?', _) => (Tok::Question, 1),
            (b':', _) => (Tok::Colon, 1),
            (b'.', _) => (Tok::Dot, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'[', _) => (Tok::LBracket, 1),
            (b']', _) => (Tok::RBracket, 1),
            (b'"' | b'\'', _) => return self.lex_string(c),
            (b'0'..=b'9', _) => return self.lex_number(),
            (c, _) if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let mut end = start + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b'$')
                {
                    end += 1;
                }
                self.pos = end;
                return Ok((Tok::Ident(self.src[start..end].to_string()), start..end));
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or('?');
                return self.err(start, format!("unexpected character `{ch}` in expression"));
            }
        };
        self.pos = start + len;
        Ok((tok, start..start + len))
    }

    fn lex_string(&mut self, quote: u8) -> Result<(Tok, Range<usize>), ParseError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                c if c as u32 == quote as u32 => {
                    self.pos = start + 1 + i + 1;
                    return Ok((Tok::Str(out), start..self.pos));
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.err(start, "unterminated string literal: add the closing quote")
    }

    fn lex_number(&mut self) -> Result<(Tok, Range<usize>), ParseError> {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let mut float = false;
        if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
            float = true;
            end += 1;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
        self.pos = end;
        let text = &self.src[start..end];
        let tok = if float {
            Tok::Float(text.parse().map_err(|_| ParseError { message: format!("bad number `{text}`"), offset: start })?)
        } else {
            match text.parse::<i64>() {
                Ok(i) => Tok::Int(i),
                Err(_) => return self.err(start, format!("number `{text}` is too large")),
            }
        };
        Ok((tok, start..end))
    }

    fn peek(&mut self) -> Result<&(Tok, Range<usize>), ParseError> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("peeked was just filled"))
    }

    fn next(&mut self) -> Result<(Tok, Range<usize>), ParseError> {
        self.peek()?;
        Ok(self.peeked.take().expect("peeked was just filled"))
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<Range<usize>, ParseError> {
        let (t, r) = self.next()?;
        if t == want { Ok(r) } else { self.err(r.start, format!("expected {what}, found {}", describe(&t))) }
    }

    /// Run `f` one recursion level deeper, refusing to go past [`MAX_DEPTH`] (stack safety on hostile input).
    fn deeper<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, ParseError>) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            let at = self.pos();
            return self.err(at, format!("expression nests deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn in_group(&self) -> bool {
        self.ctx.last() == Some(&Ctx::Group)
    }

    /// Parse the body of a `<+ … >` group whose `<+` ends at `self.pos`; consumes the closing `>`.
    /// Returns the body and the byte offset just past the `>`.
    /// A name of a path with expressions spliced into it, from `name` (at `start..end`) on: nested `<+ … >`
    /// groups and name characters right after each other, with nothing between them.
    fn spliced(&mut self, name: String, start: usize, mut end: usize) -> Result<PathSeg, ParseError> {
        let mut pieces = vec![Piece::Text(name)];
        loop {
            if self.src[end..].starts_with("<+") {
                self.peeked = None;
                self.pos = end + 2;
                let (body, close) = self.parse_group_body(end)?;
                pieces.push(Piece::Expr(Box::new(body)));
                end = close;
                self.peeked = None;
                self.pos = end;
            } else {
                let len = self.src[end..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .unwrap_or(self.src.len() - end);
                if len == 0 {
                    break;
                }
                pieces.push(Piece::Text(self.src[end..end + len].to_string()));
                end += len;
                self.peeked = None;
                self.pos = end;
            }
        }
        Ok(PathSeg::Spliced { written: self.src[start..end].to_string(), pieces })
    }

    pub(crate) fn parse_group_body(&mut self, open_at: usize) -> Result<(Expr, usize), ParseError> {
        self.ctx.push(Ctx::Group);
        if matches!(self.peek()?.0, Tok::Gt | Tok::Ge) {
            let at = self.pos();
            return self.err(at, "empty expression `<+>`: put a reference or a value between `<+` and `>`");
        }
        let body = self.expr()?;
        let close = self.close_group(open_at)?;
        self.ctx.pop();
        Ok((body, close))
    }

    fn close_group(&mut self, open_at: usize) -> Result<usize, ParseError> {
        let (t, r) = self.next()?;
        match t {
            Tok::Gt => Ok(r.end),
            // `>=` right after a group is the closing `>` followed by a literal `=`.
            Tok::Ge => {
                self.pos = r.start + 1;
                Ok(r.start + 1)
            }
            Tok::Eof => self.err(open_at, "unterminated expression: `<+` has no closing `>`"),
            other => {
                self.err(r.start, format!("expected `>` to close the `<+` expression, found {}", describe(&other)))
            }
        }
    }

    pub(crate) fn expr(&mut self) -> Result<Expr, ParseError> {
        self.ternary()
    }

    fn ternary(&mut self) -> Result<Expr, ParseError> {
        self.deeper(Self::ternary_inner)
    }

    fn ternary_inner(&mut self) -> Result<Expr, ParseError> {
        let cond = self.binary(0)?;
        if self.peek()?.0 == Tok::Question {
            self.next()?;
            self.ctx.push(Ctx::Nested);
            let a = self.ternary()?;
            self.expect(Tok::Colon, "`:` of the `? :` operator")?;
            self.ctx.pop();
            let b = self.ternary()?;
            let span = cond.span.start..b.span.end;
            return Ok(Expr { kind: ExprKind::Ternary(Box::new(cond), Box::new(a), Box::new(b)), span });
        }
        Ok(cond)
    }

    fn infix(&mut self) -> Result<Option<(BinaryOp, u8)>, ParseError> {
        let in_group = self.in_group();
        let op = match &self.peek()?.0 {
            Tok::OrOr => BinaryOp::Or,
            Tok::AndAnd => BinaryOp::And,
            Tok::EqEq => BinaryOp::Eq,
            Tok::Ne => BinaryOp::Ne,
            Tok::Match => BinaryOp::Match,
            Tok::NotMatch => BinaryOp::NotMatch,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt | Tok::Ge if in_group => return Ok(None),
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            Tok::Plus => BinaryOp::Add,
            Tok::Minus => BinaryOp::Sub,
            Tok::Star => BinaryOp::Mul,
            Tok::Slash => BinaryOp::Div,
            Tok::Percent => BinaryOp::Rem,
            Tok::Ident(w) => match w.as_str() {
                "or" => BinaryOp::Or,
                "and" => BinaryOp::And,
                "eq" => BinaryOp::Eq,
                "ne" => BinaryOp::Ne,
                "lt" => BinaryOp::Lt,
                "le" => BinaryOp::Le,
                "gt" => BinaryOp::Gt,
                "ge" => BinaryOp::Ge,
                "div" => BinaryOp::Div,
                "mod" => BinaryOp::Rem,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let prec = match op {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Match | BinaryOp::NotMatch => 3,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => 4,
            BinaryOp::Add | BinaryOp::Sub => 5,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 6,
        };
        Ok(Some((op, prec)))
    }

    fn binary(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let saved = self.depth;
        let r = self.binary_chain(min_prec);
        self.depth = saved;
        r
    }

    fn binary_chain(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.infix()? {
            if prec <= min_prec {
                break;
            }
            self.next()?;
            // Each operator in a chain deepens the (left-leaning) tree by one.
            let rhs = self.deeper(|p| p.binary(prec))?;
            self.depth += 1;
            let span = lhs.span.start..rhs.span.end;
            lhs = Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let (start, op) = {
            let (t, r) = self.peek()?;
            let op = match t {
                Tok::Not => Some(UnaryOp::Not),
                Tok::Minus => Some(UnaryOp::Neg),
                Tok::Ident(w) if w == "not" => Some(UnaryOp::Not),
                _ => None,
            };
            (r.start, op)
        };
        if let Some(op) = op {
            self.next()?;
            let inner = self.deeper(Self::unary)?;
            let span = start..inner.span.end;
            return Ok(Expr { kind: ExprKind::Unary(op, Box::new(inner)), span });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let saved = self.depth;
        let r = self.postfix_chain();
        self.depth = saved;
        r
    }

    fn postfix_chain(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            if self.depth >= MAX_DEPTH {
                let at = self.pos();
                return self.err(at, format!("expression nests deeper than {MAX_DEPTH} levels"));
            }
            self.depth += 1;
            match self.peek()?.0 {
                Tok::Dot => {
                    self.next()?;
                    let (t, r) = self.next()?;
                    let name = match t {
                        Tok::Ident(n) => n,
                        Tok::Int(i) if i >= 0 => i.to_string(),
                        other => {
                            return self.err(r.start, format!("expected a name after `.`, found {}", describe(&other)));
                        }
                    };
                    // `g<+stepGroup.identifierPostFix>`: expressions spliced into a name of a path.
                    if self.src[r.end..].starts_with("<+")
                        && let ExprKind::Path(_) = e.kind
                    {
                        let seg = self.spliced(name, r.start, r.end)?;
                        let span = e.span.start..self.pos;
                        if let ExprKind::Path(mut segs) = e.kind {
                            segs.push(seg);
                            e = Expr { kind: ExprKind::Path(segs), span };
                        }
                        continue;
                    }
                    if self.peek()?.0 == Tok::LParen {
                        let args = self.args()?;
                        let span = e.span.start..self.pos;
                        e = Expr { kind: ExprKind::Call { target: Box::new(e), method: name, args }, span };
                    } else {
                        let span = e.span.start..r.end;
                        e = match e.kind {
                            ExprKind::Path(mut segs) => {
                                segs.push(PathSeg::Name(name));
                                Expr { kind: ExprKind::Path(segs), span }
                            }
                            other => Expr {
                                kind: ExprKind::Member(Box::new(Expr { kind: other, span: e.span }), name),
                                span,
                            },
                        };
                    }
                }
                Tok::LBracket => {
                    self.next()?;
                    self.ctx.push(Ctx::Nested);
                    let idx = self.expr()?;
                    self.ctx.pop();
                    let end = self.expect(Tok::RBracket, "`]`")?.end;
                    let span = e.span.start..end;
                    e = match (e.kind, &idx.kind) {
                        (ExprKind::Path(mut segs), ExprKind::Literal(Value::Int(i))) if *i >= 0 => {
                            segs.push(PathSeg::Index(*i as usize));
                            Expr { kind: ExprKind::Path(segs), span }
                        }
                        (ExprKind::Path(mut segs), ExprKind::Literal(Value::String(s))) => {
                            segs.push(PathSeg::Name(s.clone()));
                            Expr { kind: ExprKind::Path(segs), span }
                        }
                        (kind, _) => {
                            Expr { kind: ExprKind::Index(Box::new(Expr { kind, span: e.span }), Box::new(idx)), span }
                        }
                    };
                }
                _ => return Ok(e),
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, ParseError> {
        self.expect(Tok::LParen, "`(`")?;
        self.ctx.push(Ctx::Nested);
        let mut args = Vec::new();
        if self.peek()?.0 != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if self.peek()?.0 == Tok::Comma {
                    self.next()?;
                } else {
                    break;
                }
            }
        }
        self.ctx.pop();
        self.expect(Tok::RParen, "`,` or `)` in the argument list")?;
        Ok(args)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (t, r) = self.next()?;
        let kind = match t {
            Tok::Int(i) => ExprKind::Literal(Value::Int(i)),
            Tok::Float(f) => ExprKind::Literal(Value::Float(f)),
            Tok::Str(s) => ExprKind::Literal(Value::String(s)),
            Tok::Ident(w) => match w.as_str() {
                "true" => ExprKind::Literal(Value::Bool(true)),
                "false" => ExprKind::Literal(Value::Bool(false)),
                "null" => ExprKind::Literal(Value::Null),
                _ => {
                    if self.peek()?.0 == Tok::LParen {
                        return self.err(
                            r.start,
                            format!("`{w}(…)` is not a function; methods are called on a value, e.g. `<+pipeline.variables.x.{w}(…)>`"),
                        );
                    }
                    ExprKind::Path(vec![PathSeg::Name(w)])
                }
            },
            Tok::LParen => {
                self.ctx.push(Ctx::Nested);
                let inner = self.expr()?;
                self.ctx.pop();
                let end = self.expect(Tok::RParen, "`)`")?.end;
                return Ok(Expr { span: r.start..end, ..inner });
            }
            Tok::LBracket => {
                self.ctx.push(Ctx::Nested);
                let mut items = Vec::new();
                if self.peek()?.0 != Tok::RBracket {
                    loop {
                        items.push(self.expr()?);
                        if self.peek()?.0 == Tok::Comma {
                            self.next()?;
                        } else {
                            break;
                        }
                    }
                }
                self.ctx.pop();
                let end = self.expect(Tok::RBracket, "`,` or `]` in the list")?.end;
                return Ok(Expr { kind: ExprKind::List(items), span: r.start..end });
            }
            Tok::Open => {
                if self.src[r.end..].starts_with("input>") {
                    return self.err(
                        r.start,
                        "a runtime input `<+input>` must be the whole field value, not part of an expression",
                    );
                }
                let (body, end) = self.parse_group_body(r.start)?;
                return Ok(Expr { kind: ExprKind::Group(Box::new(body)), span: r.start..end });
            }
            Tok::Eof if self.in_group() => {
                return self.err(r.start, "unterminated expression: `<+` has no closing `>`");
            }
            other => {
                return self.err(r.start, format!("expected a value or a reference, found {}", describe(&other)));
            }
        };
        Ok(Expr { kind, span: r })
    }

    pub(crate) fn expect_eof(&mut self) -> Result<(), ParseError> {
        let (t, r) = self.next()?;
        if t == Tok::Eof {
            Ok(())
        } else {
            self.err(r.start, format!("unexpected {} after the end of the expression", describe(&t)))
        }
    }
}

/// Parse the inside of one `<+ … >` (without the brackets), e.g. `pipeline.variables.version`.
pub fn parse_expression(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser::new(src, 0);
    let e = p.expr()?;
    p.expect_eof()?;
    Ok(e)
}

/// Parse a condition (`when.condition`, an Http `assertion`): the whole string is one expression in which
/// `<+ … >` segments are nested groups, e.g. `<+pipeline.variables.run> == "true" && <+stage.status> != "Failed"`.
/// Substituted values are operands, never re-parsed.
pub fn parse_condition(src: &str) -> Result<Expr, ParseError> {
    if src.trim().is_empty() {
        return Err(ParseError { message: "empty condition".into(), offset: 0 });
    }
    parse_expression(src)
}
