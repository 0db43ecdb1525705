//! The stage graph drawn on the server as SVG: stages left to right in the order they run, the stages of a
//! parallel block stacked in one column, thin arrows for the order, and the computed dependency edges (from
//! expressions and `useFromStage`) as labelled arcs above the stages, each saying what it carries
//! (`artifact`, `service`, …). [`layout`] is a pure function (table-tested); [`svg`] only draws what it placed.

use maud::{Markup, html};
use plan::{Edge, Via};

/// Width of a stage box.
pub const BOX_W: u32 = 168;
/// Height of a stage box.
pub const BOX_H: u32 = 52;
const COL_GAP: u32 = 64;
const ROW_GAP: u32 = 14;
const MARGIN: u32 = 12;
/// Height an arc rises per column it spans (bounded), so nested arcs do not cover each other.
const ARC_STEP: u32 = 16;
const ARC_MAX_SPAN: u32 = 8;

/// A stage to draw: identifier and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageBox {
    /// Identifier.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Column (order of running).
    pub col: u32,
    /// Row within a parallel block.
    pub row: u32,
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
}

/// A dependency arc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arc {
    /// The dependent stage.
    pub stage: String,
    /// The stage it depends on.
    pub depends_on: String,
    /// What the edge carries, short (`artifact`, `service, environment`).
    pub label: String,
    /// The exact paths, for the tooltip.
    pub detail: String,
    /// SVG path data.
    pub d: String,
    /// Where the label goes.
    pub label_x: u32,
    /// Where the label goes.
    pub label_y: u32,
    /// Propagation (`useFromStage`) rather than an expression.
    pub propagation: bool,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Stage boxes.
    pub boxes: Vec<StageBox>,
    /// Order arrows between consecutive columns (path data).
    pub flow: Vec<String>,
    /// Dependency arcs.
    pub arcs: Vec<Arc>,
    /// Drawing width.
    pub width: u32,
    /// Drawing height.
    pub height: u32,
}

/// What an edge carries, in a few words: the last segment of each path read (`artifact`), or for
/// `useFromStage` the settings propagated (`service`, `environment`, `infrastructure`).
pub fn carries(e: &Edge) -> String {
    let mut words: Vec<&str> = Vec::new();
    for p in &e.paths {
        let last = p.rsplit('.').next().unwrap_or(p);
        let word = match (e.via, last) {
            (Via::Propagation, "env") => "environment",
            (Via::Propagation, "infra") => "infrastructure",
            (_, w) => w,
        };
        if !words.contains(&word) {
            words.push(word);
        }
    }
    let mut s = words.join(", ");
    if s.chars().count() > 36 {
        s = s.chars().take(35).collect::<String>() + "…";
    }
    s
}

/// Place the stages (`groups`: one entry per stage or parallel block, each `(identifier, name)`) and the
/// dependency edges.
pub fn layout(groups: &[Vec<(String, String)>], edges: &[Edge]) -> Layout {
    let cols = groups.len() as u32;
    let rows = groups.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let mut where_: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for (c, g) in groups.iter().enumerate() {
        for (id, _) in g {
            where_.insert(id.as_str(), c as u32);
        }
    }
    // Arcs rise with the columns they span; the tallest sets the top margin.
    let spans: Vec<Option<(u32, u32)>> =
        edges.iter().map(|e| Some((*where_.get(e.depends_on.as_str())?, *where_.get(e.stage.as_str())?))).collect();
    let rise = |a: u32, b: u32| 22 + ARC_STEP * a.abs_diff(b).clamp(1, ARC_MAX_SPAN);
    let top = spans.iter().flatten().map(|(a, b)| rise(*a, *b) + 14).max().unwrap_or(0) + MARGIN;
    let x_of = |c: u32| MARGIN + c * (BOX_W + COL_GAP);
    let mut boxes = Vec::new();
    for (c, g) in groups.iter().enumerate() {
        for (r, (id, name)) in g.iter().enumerate() {
            boxes.push(StageBox {
                id: id.clone(),
                name: name.clone(),
                col: c as u32,
                row: r as u32,
                x: x_of(c as u32),
                y: top + r as u32 * (BOX_H + ROW_GAP),
            });
        }
    }
    let mid = top + BOX_H / 2;
    let flow = (1..cols).map(|c| format!("M{} {mid} L{} {mid}", x_of(c - 1) + BOX_W + 4, x_of(c) - 6)).collect();
    let mut arcs = Vec::new();
    // Several arcs between the same two columns are spread so that their ends and labels stay apart.
    let mut used: std::collections::HashMap<(u32, u32), u32> = std::collections::HashMap::new();
    for (e, span) in edges.iter().zip(&spans) {
        let Some((from, to)) = *span else { continue };
        let n = used.entry((from.min(to), from.max(to))).or_default();
        let shift = *n * 12;
        *n += 1;
        let x1 = x_of(from) + BOX_W / 2 + 10 + shift.min(BOX_W / 2 - 12);
        let x2 = x_of(to) + BOX_W / 2 - 10 - shift.min(BOX_W / 2 - 12);
        let h = rise(from, to) + shift;
        let apex = top.saturating_sub(h);
        let d = if from == to {
            // Within one parallel block: a loop on the left side.
            let y1 = top + 8;
            format!(
                "M{} {y1} C{} {y1} {} {} {} {}",
                x_of(from),
                x_of(from) - 30,
                x_of(from) - 30,
                y1 + 30,
                x_of(from),
                y1 + 30
            )
        } else {
            format!("M{x1} {top} C{x1} {apex} {x2} {apex} {x2} {}", top - 2)
        };
        arcs.push(Arc {
            stage: e.stage.clone(),
            depends_on: e.depends_on.clone(),
            label: carries(e),
            detail: e.paths.join("\n"),
            d,
            label_x: (x1 + x2) / 2,
            label_y: top.saturating_sub(h * 3 / 4).max(10),
            propagation: e.via == Via::Propagation,
        });
    }
    Layout {
        boxes,
        flow,
        arcs,
        width: x_of(cols.max(1)) - COL_GAP + MARGIN,
        height: top + rows * (BOX_H + ROW_GAP) - ROW_GAP + MARGIN,
    }
}

/// How a stage box is drawn: the status it shows (text and class), and where it links.
pub struct Look {
    /// Status text (shown in the box, not only as a colour), and a CSS class.
    pub status: Option<(String, String)>,
    /// A link target.
    pub href: Option<String>,
    /// Extra note (e.g. `reused`).
    pub note: Option<String>,
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}

/// Draw a layout; `look` says how each stage box appears.
pub fn svg(l: &Layout, title: &str, look: &dyn Fn(&str) -> Look) -> Markup {
    html! {
        svg class="stage-graph" role="img" aria-label=(title) width=(l.width) height=(l.height)
            viewBox=(format!("0 0 {} {}", l.width, l.height)) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M0 0 L10 5 L0 10 z" class="arrowhead" {}
                }
            }
            @for f in &l.flow {
                path class="flow" d=(f) marker-end="url(#arrow)" {}
            }
            @for a in &l.arcs {
                g class=(if a.propagation { "dep propagation" } else { "dep expression" }) data-from=(a.depends_on) data-to=(a.stage) {
                    title { (a.stage) " depends on " (a.depends_on)
                        (if a.propagation { " (useFromStage)" } else { " (expression)" }) ":\n" (a.detail) }
                    path d=(a.d) marker-end="url(#arrow)" {}
                    text x=(a.label_x) y=(a.label_y) text-anchor="middle" { (a.label) }
                }
            }
            @for b in &l.boxes {
                @let lk = look(&b.id);
                @let class = format!("stage {}", lk.status.as_ref().map_or("", |s| s.1.as_str()));
                g class=(class) data-stage=(b.id) {
                    @if let Some(href) = &lk.href {
                        a href=(href) {
                            (stage_box(b, &lk))
                        }
                    } @else {
                        (stage_box(b, &lk))
                    }
                }
            }
        }
    }
}

fn stage_box(b: &StageBox, lk: &Look) -> Markup {
    html! {
        title { (b.name) " (" (b.id) ")" @if let Some((s, _)) = &lk.status { " — " (s) } @if let Some(n) = &lk.note { " — " (n) } }
        rect x=(b.x) y=(b.y) width=(BOX_W) height=(BOX_H) rx="6" {}
        text x=(b.x + 10) y=(b.y + 20) class="name" { (short(&b.name, 22)) }
        text x=(b.x + 10) y=(b.y + 39) class="sub" {
            @match &lk.status {
                Some((s, _)) => { tspan class="status-text" { (s) } @if let Some(n) = &lk.note { " · " (n) } },
                None => { (short(&b.id, 24)) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ids: &[&[&str]]) -> Vec<Vec<(String, String)>> {
        ids.iter().map(|c| c.iter().map(|i| (i.to_string(), i.to_uppercase())).collect()).collect()
    }

    fn edge(stage: &str, on: &str, via: Via, paths: &[&str]) -> Edge {
        Edge {
            stage: stage.into(),
            depends_on: on.into(),
            via,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            at: vec![],
            templates: vec![],
        }
    }

    #[test]
    fn labels_say_what_an_edge_carries() {
        let cases = [
            (
                edge(
                    "d",
                    "b",
                    Via::Expression,
                    &["pipeline.stages.b.spec.execution.steps.c.output.outputVariables.artifact"],
                ),
                "artifact",
            ),
            (
                edge(
                    "p",
                    "d",
                    Via::Propagation,
                    &["pipeline.stages.d.service", "pipeline.stages.d.env", "pipeline.stages.d.infra"],
                ),
                "service, environment, infrastructure",
            ),
            (
                edge(
                    "x",
                    "y",
                    Via::Expression,
                    &[
                        "pipeline.stages.y.variables.a",
                        "pipeline.stages.y.variables.b",
                        "pipeline.stages.z.variables.a",
                    ],
                ),
                "a, b",
            ),
            (
                edge(
                    "x",
                    "y",
                    Via::Expression,
                    &["pipeline.stages.y.variables.a_very_long_variable_name_indeed_and_longer"],
                ),
                "a_very_long_variable_name_indeed_an…",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(carries(&e), want);
        }
    }

    #[test]
    fn stages_in_order_parallel_blocks_stacked() {
        let l = layout(&g(&[&["a"], &["b", "c"], &["d"]]), &[]);
        let pos: Vec<(&str, u32, u32)> = l.boxes.iter().map(|b| (b.id.as_str(), b.col, b.row)).collect();
        assert_eq!(pos, [("a", 0, 0), ("b", 1, 0), ("c", 1, 1), ("d", 2, 0)]);
        assert_eq!(l.flow.len(), 2);
        assert!(l.boxes[1].x > l.boxes[0].x && l.boxes[1].x == l.boxes[2].x && l.boxes[2].y > l.boxes[1].y);
        assert!(l.width >= l.boxes[3].x + BOX_W && l.height >= l.boxes[2].y + BOX_H);
        assert!(l.arcs.is_empty());
    }

    #[test]
    fn arcs_rise_with_their_span_and_stay_inside() {
        let edges = [
            edge("b", "a", Via::Expression, &["pipeline.stages.a.variables.v"]),
            edge("d", "a", Via::Propagation, &["pipeline.stages.a.service"]),
            edge("zz", "a", Via::Expression, &["pipeline.stages.a.variables.v"]),
        ];
        let l = layout(&g(&[&["a"], &["b"], &["c"], &["d"]]), &edges);
        // An edge to a stage that is not drawn is left out.
        assert_eq!(l.arcs.len(), 2);
        let (near, far) = (&l.arcs[0], &l.arcs[1]);
        assert!(near.label_y > far.label_y, "the longer arc rises higher");
        assert!(far.propagation && !near.propagation);
        assert_eq!((near.label.as_str(), far.label.as_str()), ("v", "service"));
        assert!(l.boxes.iter().all(|b| b.y > far.label_y));
    }

    #[test]
    fn an_empty_pipeline_draws_nothing_wrong() {
        let l = layout(&[], &[]);
        assert!(l.boxes.is_empty() && l.width > 0 && l.height > 0);
    }
}
