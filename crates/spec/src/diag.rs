//! Diagnostics: an error or warning with the span it is about, rendered as `FILE:LINE:COL: error: MESSAGE`
//! followed by the offending source line with a caret under the span and an optional `help:` line, or as JSON.

use serde::Serialize;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

/// A range of source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Hash)]
pub struct Span {
    /// First character.
    pub start: Pos,
    /// Just past the last character.
    pub end: Pos,
    /// Which file: 0 is the document's own; `k` is the document's `k`th other file (a template it uses).
    #[serde(skip_serializing_if = "is_zero")]
    pub file: u16,
}

fn is_zero(f: &u16) -> bool {
    *f == 0
}

impl Span {
    /// A span covering `len` characters from `start` on one line.
    pub fn at(start: Pos, len: u32) -> Span {
        Span { start, end: Pos { line: start.line, col: start.col + len.max(1) }, file: 0 }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is invalid.
    Error,
    /// The file is valid but probably not what was meant.
    Warning,
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// What is wrong and what was expected.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// A diagnostic as `validate --output json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
    /// The message.
    pub message: &'a str,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

impl Diagnostic {
    /// An error.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, span, message: message.into(), help: None }
    }

    /// A warning.
    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, span, message: message.into(), help: None }
    }

    /// Attach a hint on how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The JSON shape.
    pub fn to_json(&self) -> JsonDiagnostic<'_> {
        JsonDiagnostic {
            line: self.span.start.line,
            column: self.span.start.col,
            message: &self.message,
            help: self.help.as_deref(),
        }
    }

    /// Render for a terminal: header line, source line, caret, help.
    pub fn render(&self, file: &str, source: &str) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let Pos { line, col } = self.span.start;
        let mut out = format!("{file}:{line}:{col}: {sev}: {}\n", self.message);
        if line > 0
            && let Some(text) = source.lines().nth(line as usize - 1)
        {
            let width = line.to_string().len();
            let chars: Vec<char> = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
            let len = if self.span.end.line == line && self.span.end.col > col {
                self.span.end.col - col
            } else {
                (chars.len() as u32 + 1).saturating_sub(col).max(1)
            };
            // Long lines are shown as a window around the column.
            const WINDOW: usize = 120;
            let c0 = col.saturating_sub(1) as usize;
            let start = if chars.len() > WINDOW && c0 > WINDOW / 2 { c0 - WINDOW / 2 } else { 0 };
            let end = (start + WINDOW).min(chars.len());
            let mut shown: String = chars[start.min(end)..end].iter().collect();
            let mut caret_at = c0 - start;
            if start > 0 {
                shown.insert(0, '…');
                caret_at += 1;
            }
            if end < chars.len() {
                shown.push('…');
            }
            let len = (len as usize).min(WINDOW.saturating_sub(caret_at).max(1));
            let pad = " ".repeat(width);
            out.push_str(&format!("{pad} |\n{line} | {shown}\n{pad} | {}{}\n", " ".repeat(caret_at), "^".repeat(len)));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        out
    }
}
