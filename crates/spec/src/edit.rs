//! Small edits to a pipeline's YAML text that keep everything else as the user wrote it — comments, order,
//! quoting, blank lines. The web UI's *Advanced Options* writes `allowStageExecutions` with this: the value is
//! replaced where it stands, or the key is added to the pipeline block just before `stages:`.

use crate::diag::Pos;
use crate::parse_document;

/// Why an edit could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The text is not a pipeline document that parses.
    #[error("the YAML is not a pipeline that parses; fix it in the editor first")]
    NotAPipeline,
    /// The pipeline block is written in a shape the edit cannot place a key in (flow style, say).
    #[error("the pipeline block is not written as an indented block; edit `{0}` in the YAML by hand")]
    Shape(String),
}

/// Set a boolean key of the `pipeline:` block (such as `allowStageExecutions`) to `value`.
pub fn set_pipeline_flag(source: &str, key: &str, value: bool) -> Result<String, EditError> {
    let doc = parse_document("pipeline.yaml", source.to_string());
    let body = doc.body().ok_or(EditError::NotAPipeline)?;
    let crate::yaml::Yaml::Map(entries) = &body.yaml else { return Err(EditError::NotAPipeline) };
    let text = if value { "true" } else { "false" };
    if let Some((_, v)) = entries.iter().find(|(k, _)| k.as_scalar() == Some(key)) {
        // Replace the value in place (a boolean is a one-line plain scalar).
        if v.span.start.line != v.span.end.line {
            return Err(EditError::Shape(key.to_string()));
        }
        let start = offset(source, v.span.start).ok_or_else(|| EditError::Shape(key.to_string()))?;
        let end = offset(source, v.span.end).ok_or_else(|| EditError::Shape(key.to_string()))?;
        if start > end {
            return Err(EditError::Shape(key.to_string()));
        }
        let mut out = String::with_capacity(source.len() + 5);
        out.push_str(&source[..start]);
        out.push_str(text);
        out.push_str(&source[end..]);
        return Ok(out);
    }
    // Add the key before `stages:` (or after the last key), indented as the block's keys are.
    let anchor = entries.iter().find(|(k, _)| k.as_scalar() == Some("stages")).or_else(|| entries.first());
    let Some((k, _)) = anchor else { return Err(EditError::Shape(key.to_string())) };
    let line_start = line_offset(source, k.span.start.line).ok_or_else(|| EditError::Shape(key.to_string()))?;
    let indent = (k.span.start.col as usize).saturating_sub(1);
    let before = &source[line_start..];
    if before.len() < indent || !before[..indent].chars().all(|c| c == ' ') {
        return Err(EditError::Shape(key.to_string()));
    }
    let mut out = String::with_capacity(source.len() + key.len() + 16);
    out.push_str(&source[..line_start]);
    out.push_str(&" ".repeat(indent));
    out.push_str(key);
    out.push_str(": ");
    out.push_str(text);
    out.push('\n');
    out.push_str(&source[line_start..]);
    Ok(out)
}

/// The byte offset where line `line` (from 1) starts.
fn line_offset(source: &str, line: u32) -> Option<usize> {
    if line == 1 {
        return Some(0);
    }
    source.match_indices('\n').nth(line as usize - 2).map(|(i, _)| i + 1)
}

/// The byte offset of a position (columns count characters, from 1).
fn offset(source: &str, pos: Pos) -> Option<usize> {
    let start = line_offset(source, pos.line)?;
    let line = &source[start..];
    let col = pos.col as usize - 1;
    line.char_indices().map(|(i, _)| i).chain(std::iter::once(line.len())).nth(col).map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "pipeline:\n  name: P\n  identifier: p\n  # the stages\n  stages:\n    - stage:\n        name: A\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo hi\n";

    #[test]
    fn edits_keep_the_rest_of_the_text() {
        let cases: Vec<(String, bool, Result<String, EditError>)> = vec![
            // Added before `stages:`, indented like its siblings; comments stay.
            (BASE.to_string(), true, Ok(BASE.replace("  # the stages\n", "  # the stages\n  allowStageExecutions: true\n"))),
            // Replaced in place.
            (
                BASE.replace("  identifier: p\n", "  identifier: p\n  allowStageExecutions: false # keep\n"),
                true,
                Ok(BASE.replace("  identifier: p\n", "  identifier: p\n  allowStageExecutions: true # keep\n")),
            ),
            (
                BASE.replace("  identifier: p\n", "  identifier: p\n  allowStageExecutions: true\n"),
                false,
                Ok(BASE.replace("  identifier: p\n", "  identifier: p\n  allowStageExecutions: false\n")),
            ),
            // Four-space indentation and non-ASCII text before the value.
            (
                "pipeline:\n    name: Déploiement\n    identifier: p\n    allowStageExecutions: no\n    stages: []\n".into(),
                true,
                Ok("pipeline:\n    name: Déploiement\n    identifier: p\n    allowStageExecutions: true\n    stages: []\n".into()),
            ),
            // Flow style: refused with a way out.
            ("pipeline: {name: P, identifier: p, stages: []}\n".into(), true, Err(EditError::Shape("allowStageExecutions".into()))),
            ("inputSet:\n  name: x\n".into(), true, Err(EditError::NotAPipeline)),
            ("- a\n- b\n".into(), true, Err(EditError::NotAPipeline)),
        ];
        for (source, value, want) in cases {
            assert_eq!(set_pipeline_flag(&source, "allowStageExecutions", value), want, "{source}");
        }
    }

    #[test]
    fn the_edit_is_read_back() {
        for value in [true, false] {
            let once = set_pipeline_flag(BASE, "allowStageExecutions", value).unwrap();
            let doc = parse_document("p.yaml", once.clone());
            assert_eq!(doc.pipeline().map(|p| p.allow_stage_executions), Some(value));
            // Idempotent.
            assert_eq!(set_pipeline_flag(&once, "allowStageExecutions", value).unwrap(), once);
        }
    }
}
