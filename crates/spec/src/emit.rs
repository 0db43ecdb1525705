//! Render the typed model back to YAML in Harness's layout (block maps, `- ` lists, `|` for multi-line
//! scripts), quoting every string that YAML would otherwise read as something else.

use serde_json::Value;

/// Render a serialised model as YAML.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(_) => map_after_dash(v, 0, &mut out),
        Value::Array(_) => seq(v, 0, &mut out),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A block map whose first entry continues the current line (after `- `, `key:` + indent, or the start).
fn map_after_dash(v: &Value, indent: usize, out: &mut String) {
    let Value::Object(o) = v else { return };
    let mut first = true;
    for (k, val) in o {
        if empty(val) {
            continue;
        }
        if !first {
            out.push_str(&" ".repeat(indent));
        }
        first = false;
        entry(k, val, indent, out);
    }
    if first {
        out.push_str("{}\n");
    }
}

fn entry(k: &str, val: &Value, indent: usize, out: &mut String) {
    out.push_str(&key(k));
    match val {
        Value::Object(_) => {
            out.push_str(":\n");
            out.push_str(&" ".repeat(indent + 2));
            map_after_dash(val, indent + 2, out);
        }
        Value::Array(_) => {
            out.push_str(":\n");
            seq(val, indent + 2, out);
        }
        _ => {
            out.push_str(": ");
            out.push_str(&scalar(val, indent + 2));
            out.push('\n');
        }
    }
}

fn seq(v: &Value, indent: usize, out: &mut String) {
    let Value::Array(a) = v else { return };
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Value::Object(_) => map_after_dash(item, indent + 2, out),
            Value::Array(inner) if inner.is_empty() => out.push_str("[]\n"),
            Value::Array(_) => {
                out.push('\n');
                seq(item, indent + 2, out);
            }
            other => {
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn key(k: &str) -> String {
    if plain_ok(k) { k.to_string() } else { quote(k) }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if first.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.ends_with(char::is_whitespace) || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if s.chars().any(|c| c.is_control()) {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off" | ".inf" | "-.inf" | ".nan"
    ) || s.parse::<f64>().is_ok()
        || lower.starts_with("0x")
        || lower.starts_with("0o")
    {
        return false;
    }
    true
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            if s.contains('\n') && block_ok(s) {
                let chomp = if s.ends_with('\n') && !s.ends_with("\n\n") {
                    ""
                } else if s.ends_with('\n') {
                    "+"
                } else {
                    "-"
                };
                let pad = " ".repeat(indent.max(2));
                let body: Vec<String> = s
                    .trim_end_matches('\n')
                    .split('\n')
                    .map(|l| if l.is_empty() { String::new() } else { format!("{pad}{l}") })
                    .collect();
                let tail = if chomp == "+" {
                    "\n".repeat(s.len() - s.trim_end_matches('\n').len() - 1)
                } else {
                    String::new()
                };
                format!("|{chomp}\n{}{tail}", body.join("\n"))
            } else if plain_ok(s) {
                s.clone()
            } else {
                quote(s)
            }
        }
        other => other.to_string(),
    }
}

fn block_ok(s: &str) -> bool {
    !s.starts_with([' ', '\n', '\t'])
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && !s.lines().any(|l| l.ends_with(' '))
}

/// Render a YAML tree as YAML, keeping every scalar's text (plain scalars stay plain, so numbers, booleans and
/// nulls read back the same) and empty lists and maps (`[]`, `{}`).
pub fn node_to_yaml(n: &crate::yaml::Node) -> String {
    let mut out = String::new();
    match &n.yaml {
        Yaml::Map(e) if !e.is_empty() => node_map(e, 0, &mut out),
        Yaml::Seq(items) if !items.is_empty() => node_seq(items, 0, &mut out),
        _ => {
            out.push_str(&node_scalar(n, 0));
            out.push('\n');
        }
    }
    out
}

use crate::yaml::{Node, Style, Yaml};

fn node_scalar(n: &Node, indent: usize) -> String {
    match &n.yaml {
        Yaml::Scalar(s, Style::Plain) => s.clone(),
        Yaml::Scalar(s, _) => scalar(&Value::String(s.clone()), indent),
        Yaml::Seq(_) => "[]".into(),
        Yaml::Map(_) => "{}".into(),
    }
}

fn is_block(n: &Node) -> bool {
    match &n.yaml {
        Yaml::Map(e) => !e.is_empty(),
        Yaml::Seq(i) => !i.is_empty(),
        Yaml::Scalar(..) => false,
    }
}

fn node_map(entries: &[(Node, Node)], indent: usize, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&key(k.as_scalar().unwrap_or_default()));
        match &v.yaml {
            Yaml::Map(e) if !e.is_empty() => {
                out.push_str(":\n");
                out.push_str(&" ".repeat(indent + 2));
                node_map(e, indent + 2, out);
            }
            Yaml::Seq(items) if !items.is_empty() => {
                out.push_str(":\n");
                node_seq(items, indent + 2, out);
            }
            _ => {
                let text = node_scalar(v, indent + 2);
                if text.is_empty() {
                    out.push_str(":\n");
                } else {
                    out.push_str(": ");
                    out.push_str(&text);
                    out.push('\n');
                }
            }
        }
    }
}

fn node_seq(items: &[Node], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match &item.yaml {
            Yaml::Map(e) if is_block(item) => {
                out.push(' ');
                node_map(e, indent + 2, out);
            }
            Yaml::Seq(inner) if is_block(item) => {
                out.push('\n');
                node_seq(inner, indent + 2, out);
            }
            _ => {
                let text = node_scalar(item, indent + 2);
                if !text.is_empty() {
                    out.push(' ');
                    out.push_str(&text);
                }
                out.push('\n');
            }
        }
    }
}
