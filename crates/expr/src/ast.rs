//! The syntax tree of one expression: literals, reference paths, operators, method calls and nested `<+…>`
//! groups, each with the byte range it was parsed from.

use crate::value::Value;
use std::ops::Range;

/// One parsed expression node with the byte range (in the source string) it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Byte range in the source string.
    pub span: Range<usize>,
}

/// A segment of a reference path: `pipeline.stages.build` is three `Name`s.
#[derive(Debug, Clone)]
pub enum PathSeg {
    /// `.name`
    Name(String),
    /// `[3]`
    Index(usize),
    /// A name with expressions spliced into it (`g<+stepGroup.identifierPostFix>`): the inner expressions are
    /// evaluated first and their text spliced in, as Harness does.
    Spliced {
        /// The segment as written.
        written: String,
        /// Its pieces, in order.
        pieces: Vec<Piece>,
    },
}

/// A piece of a spliced name.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text as written.
    Text(String),
    /// A nested `<+ … >`.
    Expr(Box<Expr>),
}

impl PartialEq for PathSeg {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathSeg::Name(a), PathSeg::Name(b)) => a == b,
            (PathSeg::Index(a), PathSeg::Index(b)) => a == b,
            (PathSeg::Spliced { written: a, .. }, PathSeg::Spliced { written: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for PathSeg {}

impl std::hash::Hash for PathSeg {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            PathSeg::Name(n) => (0u8, n).hash(h),
            PathSeg::Index(i) => (1u8, i).hash(h),
            PathSeg::Spliced { written, .. } => (2u8, written).hash(h),
        }
    }
}

impl PathSeg {
    /// The name as static analysis reads it: a spliced name without its expressions (`g<+…>` reads as `g`, the
    /// step group whose iteration suffix the expression gives).
    pub fn static_name(&self) -> String {
        match self {
            PathSeg::Name(n) => n.clone(),
            PathSeg::Index(i) => i.to_string(),
            PathSeg::Spliced { pieces, .. } => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Text(t) => Some(t.as_str()),
                    Piece::Expr(_) => None,
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for PathSeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathSeg::Name(n) => f.write_str(n),
            PathSeg::Index(i) => write!(f, "[{i}]"),
            PathSeg::Spliced { written, .. } => f.write_str(written),
        }
    }
}

/// Join path segments as written: `a.b[0].c`.
pub fn path_to_string(segs: &[PathSeg]) -> String {
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        match s {
            PathSeg::Name(n) | PathSeg::Spliced { written: n, .. } => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(n);
            }
            PathSeg::Index(n) => {
                out.push('[');
                out.push_str(&n.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `!x` / `not x`
    Not,
    /// `-x`
    Neg,
}

/// Binary operators, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `||` / `or`
    Or,
    /// `&&` / `and`
    And,
    /// `==` / `eq`
    Eq,
    /// `!=` / `ne`
    Ne,
    /// `=~` (regular expression match)
    Match,
    /// `!~`
    NotMatch,
    /// `<` / `lt`
    Lt,
    /// `<=` / `le`
    Le,
    /// `>` / `gt`
    Gt,
    /// `>=` / `ge`
    Ge,
    /// `+` (numbers add, anything else concatenates)
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` / `div`
    Div,
    /// `%` / `mod`
    Rem,
}

impl BinaryOp {
    /// The operator as written in canonical form.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Match => "=~",
            BinaryOp::NotMatch => "!~",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}

/// The kinds of expression node.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `"text"`, `42`, `1.5`, `true`, `null`.
    Literal(Value),
    /// A reference such as `pipeline.variables.version` or `matrix.os`.
    Path(Vec<PathSeg>),
    /// A nested `<+ … >` group inside an expression.
    Group(Box<Expr>),
    /// `[a, b]` list literal.
    List(Vec<Expr>),
    /// `!x`, `-x`.
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `target.method(args)`; `secrets.getValue("x")` and `json.object(s)` are calls on a namespace path.
    Call {
        /// The receiver.
        target: Box<Expr>,
        /// Method name.
        method: String,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `target.name` where the target is not itself a path (e.g. a call result).
    Member(Box<Expr>, String),
    /// `target[index]`.
    Index(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Visit this node and every node below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Literal(_) => {}
            ExprKind::Path(segs) => {
                for s in segs {
                    if let PathSeg::Spliced { pieces, .. } = s {
                        for p in pieces {
                            if let Piece::Expr(e) = p {
                                e.walk(f);
                            }
                        }
                    }
                }
            }
            ExprKind::Group(e) | ExprKind::Unary(_, e) | ExprKind::Member(e, _) => e.walk(f),
            ExprKind::List(items) => items.iter().for_each(|e| e.walk(f)),
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
                a.walk(f);
                b.walk(f);
            }
            ExprKind::Ternary(c, a, b) => {
                c.walk(f);
                a.walk(f);
                b.walk(f);
            }
            ExprKind::Call { target, args, .. } => {
                target.walk(f);
                args.iter().for_each(|e| e.walk(f));
            }
        }
    }
}
