//! Durations as Harness writes them: `10m`, `1h30m`, `1d`, `500ms`, `2w`, with optional spaces between parts;
//! or an expression / runtime input whose value is known only when the pipeline runs.

use schemars::JsonSchema;
use serde::Serialize;

use crate::diag::Span;

/// A duration field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Duration {
    /// As written.
    pub text: String,
    /// Milliseconds, when the text is a literal duration; `None` for an expression or runtime input.
    pub millis: Option<u64>,
    /// Where it was written.
    pub span: Span,
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 10m, 1h30m, 1d or 500ms, or an expression <+…>",
            "pattern": "^(\\s*[0-9]+\\s*(ms|s|m|h|d|w))+\\s*$|<\\+"
        })
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Duration {
    /// The value as a std duration, when literal.
    pub fn as_std(&self) -> Option<std::time::Duration> {
        self.millis.map(std::time::Duration::from_millis)
    }
}

/// Parse a literal duration to milliseconds. Errors say what was expected.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an empty duration; expected e.g. 10m, 1h30m, 1d or 500ms".into());
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{t}` is not a duration; expected a number and a unit (ms, s, m, h, d, w), e.g. 10m or 1h30m"
            ));
        }
        let n: u64 = t[start..i].parse().map_err(|_| format!("`{t}`: the number is too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &t[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(format!("`{t}` has a number without a unit; add one of ms, s, m, h, d, w (e.g. {n}s)")),
            u => return Err(format!("`{t}` has an unknown unit `{u}`; expected ms, s, m, h, d or w")),
        };
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("`{t}` is too long"))?;
    }
    Ok(total)
}
