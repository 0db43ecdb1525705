//! Runtime-input markers: `<+input>` with the modifiers `.default(v)`, `.allowedValues(a, b, c)`, `.regex(re)`
//! and `.executionInput()` chained in any order, parsed into structured data and checked (a malformed regex,
//! an empty allowed-values list, a default that breaks its own constraints) before anything runs.

use crate::parser::ParseError;
use serde::{Deserialize, Serialize};

/// A field whose value is given when the pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeInput {
    /// `.default(v)`: used when no value is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `.allowedValues(a, b)`: the value must be one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Vec<String>>,
    /// `.regex(re)`: the whole value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `.executionInput()`: asked for while the pipeline runs, not at start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub execution_input: bool,
}

/// A value that breaks a runtime input's constraints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not one of `.allowedValues(…)`.
    #[error("`{value}` is not one of the allowed values: {}", allowed.join(", "))]
    NotAllowed {
        /// The value given.
        value: String,
        /// The allowed values.
        allowed: Vec<String>,
    },
    /// Does not match `.regex(…)`.
    #[error("`{value}` does not match the regular expression `{regex}`")]
    NoMatch {
        /// The value given.
        value: String,
        /// The pattern.
        regex: String,
    },
}

impl RuntimeInput {
    /// Check a value against `.allowedValues` and `.regex`.
    pub fn check(&self, value: &str) -> Result<(), InputError> {
        if let Some(allowed) = &self.allowed_values
            && !allowed.iter().any(|a| a == value)
        {
            return Err(InputError::NotAllowed { value: value.to_string(), allowed: allowed.clone() });
        }
        if let Some(re) = &self.regex {
            let ok = full_match_regex(re).map(|r| r.is_match(value)).unwrap_or(false);
            if !ok {
                return Err(InputError::NoMatch { value: value.to_string(), regex: re.clone() });
            }
        }
        Ok(())
    }

    /// Render back to the marker syntax.
    pub fn to_marker(&self) -> String {
        let mut s = String::from("<+input>");
        if let Some(d) = &self.default {
            s.push_str(&format!(".default({d})"));
        }
        if let Some(a) = &self.allowed_values {
            s.push_str(&format!(".allowedValues({})", a.join(",")));
        }
        if let Some(r) = &self.regex {
            s.push_str(&format!(".regex({r})"));
        }
        if self.execution_input {
            s.push_str(".executionInput()");
        }
        s
    }
}

fn full_match_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{re})$")).size_limit(1 << 20).build()
}

/// Parse a whole field value as a runtime input. `Ok(None)` when the value is not a runtime input at all.
pub fn parse_runtime_input(src: &str) -> Result<Option<RuntimeInput>, ParseError> {
    let t = src.trim_start();
    if !t.starts_with("<+input>") {
        return Ok(None);
    }
    let at = src.len() - t.len();
    let (input, end) = parse_runtime_input_at(src, at)?;
    if !src[end..].trim().is_empty() {
        return Err(ParseError {
            message: "unexpected text after the runtime input; a runtime input must be the whole field value".into(),
            offset: end,
        });
    }
    Ok(Some(input))
}

/// Parse the marker starting at byte `at` (which holds `<+input>`); returns it and the offset just after it.
pub(crate) fn parse_runtime_input_at(src: &str, at: usize) -> Result<(RuntimeInput, usize), ParseError> {
    let err = |offset: usize, message: String| ParseError { message, offset };
    let mut pos = at + "<+input>".len();
    let mut input = RuntimeInput::default();
    let mut seen: Vec<&str> = Vec::new();
    while src[pos..].starts_with('.') {
        let name_start = pos + 1;
        let name_len = src[name_start..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let name = &src[name_start..name_start + name_len];
        let open = name_start + name_len;
        if !src[open..].starts_with('(') {
            return Err(err(open, format!("expected `(` after `.{name}` in the runtime input")));
        }
        let (raw, close) = raw_args(src, open)
            .ok_or_else(|| err(open, format!("`.{name}(` has no closing `)`: balance the parentheses")))?;
        if seen.contains(&name) {
            return Err(err(pos, format!("`.{name}(…)` is given twice in one runtime input")));
        }
        match name {
            "default" => input.default = Some(unquote(raw.trim())),
            "allowedValues" => {
                let values = split_values(raw);
                if values.iter().all(|v| v.is_empty()) {
                    return Err(err(
                        open,
                        "`.allowedValues()` needs at least one value: `.allowedValues(a, b)`".into(),
                    ));
                }
                if values.iter().any(|v| v.is_empty()) {
                    return Err(err(open, "`.allowedValues(…)` has an empty value: remove the extra comma".into()));
                }
                input.allowed_values = Some(values);
            }
            "regex" => {
                let re = raw.trim();
                if re.is_empty() {
                    return Err(err(open, "`.regex()` needs a pattern: `.regex(^[0-9]+$)`".into()));
                }
                if let Err(e) = full_match_regex(re) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                    return Err(err(open + 1, format!("`.regex({re})` is not a valid regular expression: {first}")));
                }
                input.regex = Some(re.to_string());
            }
            "executionInput" => {
                if !raw.trim().is_empty() {
                    return Err(err(open, "`.executionInput()` takes no arguments".into()));
                }
                input.execution_input = true;
            }
            other => {
                return Err(err(
                    name_start,
                    format!(
                        "unknown runtime input modifier `.{other}(…)`; expected .default(…), .allowedValues(…), .regex(…) or .executionInput()"
                    ),
                ));
            }
        }
        seen.push(name);
        pos = close + 1;
    }
    if let Some(d) = &input.default
        && let Err(e) = input.check(d)
    {
        return Err(err(at, format!("the default breaks the input's own constraint: {e}")));
    }
    Ok((input, pos))
}

/// The text between the `(` at `open` and its matching `)`, honouring nested parentheses and quotes.
fn raw_args(src: &str, open: usize) -> Option<(&str, usize)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, ch) in src[open..].char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, ch) {
            (_, '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'')
                if depth == 1
                    && (src[open + 1..open + i].trim().is_empty() || src[..open + i].trim_end().ends_with(',')) =>
            {
                quote = Some(ch)
            }
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some((&src[open + 1..open + i], open + i));
                }
            }
            _ => {}
        }
    }
    None
}

/// Split `a, "b, c", d\,e` on top-level commas; quotes and `\,` keep commas inside a value.
fn split_values(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (_, '\\') if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') if cur.trim().is_empty() => {
                cur.clear();
                quote = Some(ch)
            }
            (None, ',') => out.push(std::mem::take(&mut cur).trim().to_string()),
            (None, c) => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}
