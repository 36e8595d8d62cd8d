//! Pictures drawn in-process, with no Graphviz: the whole graph or one cycle as SVG (a
//! layered layout by `layout-rs`), and a self-contained HTML page per cycle with the
//! lockdep-style text, the picture and each edge's stacks.

use std::fmt::Write as _;

use layout::{
    backends::svg::SVGWriter,
    core::{base::Orientation, color::Color, style::StyleAttr},
    std_shapes::{
        render::get_shape_size,
        shapes::{Arrow, Element, LineEndKind, ShapeKind},
    },
    topo::layout::VisualGraph,
};

use crate::{
    export::cycle_edges,
    graph::{ClassId, Cycle, LockGraph},
    model::{Frame, TaskInfo},
    suppressions::Suppressions,
};

const FONT_SIZE: usize = 14;
/// Classes plus edges up to which `layout-rs` minimises edge crossings.
const OPTIMIZE_LIMIT: usize = 200;
/// Classes plus edges up to which `layout-rs` lays the graph out at all: its placement
/// grows much faster than the graph (measured on random tangled graphs: 3 s at 400 classes
/// plus edges, 15 s at 550). Larger graphs get [`draw_large`]'s plain layering, linear in
/// the graph.
const LAYOUT_LIMIT: usize = 400;

/// How an edge is drawn: on an unguarded cycle, on a guarded one, or neither.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    Unguarded,
    Guarded,
    Plain,
}

/// Escapes text for XML and HTML content and attribute values.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Lays out and draws `nodes` (class names) and `edges` (indices into `nodes`).
fn draw(nodes: &[&str], edges: &[(usize, usize, String, EdgeKind)]) -> String {
    if nodes.is_empty() {
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
                width=\"240\" height=\"40\" viewBox=\"0 0 240 40\"><text x=\"10\" y=\"25\">\
                no lock classes</text></svg>\n"
            .to_string();
    }
    if nodes.len() + edges.len() > LAYOUT_LIMIT {
        return draw_large(nodes, edges);
    }
    let mut vg = VisualGraph::new(Orientation::TopToBottom);
    let handles: Vec<_> = nodes
        .iter()
        .map(|name| {
            // The renderer escapes the label; the shape is sized from its characters.
            let shape = ShapeKind::new_box(name);
            let size = get_shape_size(Orientation::TopToBottom, &shape, FONT_SIZE, false);
            let look = StyleAttr::new(
                Color::fast("black"),
                1,
                Some(Color::fast("white")),
                4,
                FONT_SIZE,
            );
            vg.add_node(Element::create(shape, look, Orientation::TopToBottom, size))
        })
        .collect();
    for (held, new, label, kind) in edges {
        let (color, width, style) = match kind {
            EdgeKind::Unguarded => ("red", 3, layout::core::style::LineStyleKind::Normal),
            EdgeKind::Guarded => ("orange", 2, layout::core::style::LineStyleKind::Dashed),
            EdgeKind::Plain => ("black", 1, layout::core::style::LineStyleKind::Normal),
        };
        let look = StyleAttr::new(Color::fast(color), width, None, 0, FONT_SIZE - 2);
        let arrow = Arrow::new(
            LineEndKind::None,
            LineEndKind::Arrow,
            style,
            label,
            &look,
            &None,
            &None,
        );
        vg.add_edge(arrow, handles[*held], handles[*new]);
    }
    let mut svg = SVGWriter::new();
    // The crossing-reduction passes grow fast with the graph (tens of seconds for a few
    // hundred classes); past this size the layering alone is drawn.
    let optimize = nodes.len() + edges.len() <= OPTIMIZE_LIMIT;
    vg.do_it(false, !optimize, false, &mut svg);
    let mut out = svg.finalize();
    out.push('\n');
    out
}

/// Ranks for a layered drawing: edges found closing a loop in a depth-first search are
/// set aside, every other edge goes one rank down at least (longest path from a source).
fn ranks(n: usize, edges: &[(usize, usize, String, EdgeKind)]) -> Vec<usize> {
    let mut succ = vec![Vec::new(); n];
    for (i, (from, to, _, _)) in edges.iter().enumerate() {
        succ[*from].push((*to, i));
    }
    // Iterative DFS: 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; n];
    let mut back = vec![false; edges.len()];
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(to, edge)) = succ[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => back[edge] = true,
                    _ => {}
                }
            } else {
                state[node] = 2;
                order.push(node);
                stack.pop();
            }
        }
    }
    // Reverse post-order is a topological order of the forward edges.
    let mut rank = vec![0; n];
    for &node in order.iter().rev() {
        for &(to, edge) in &succ[node] {
            if !back[edge] {
                rank[to] = rank[to].max(rank[node] + 1);
            }
        }
    }
    rank
}

/// A plain layered drawing for graphs too large for `layout-rs`: one row per rank, straight
/// arrows, no labels on the edges.
fn draw_large(nodes: &[&str], edges: &[(usize, usize, String, EdgeKind)]) -> String {
    const ROW: f64 = 90.0;
    const HEIGHT: f64 = 26.0;
    const GAP: f64 = 16.0;
    let rank = ranks(nodes.len(), edges);
    let rows = rank.iter().max().map_or(0, |r| r + 1);
    let char_width = FONT_SIZE as f64 * 0.62;
    let widths: Vec<f64> = nodes
        .iter()
        .map(|name| name.chars().count() as f64 * char_width + 16.0)
        .collect();
    let mut x = vec![0.0; nodes.len()];
    let mut row_end = vec![GAP; rows];
    for node in 0..nodes.len() {
        x[node] = row_end[rank[node]];
        row_end[rank[node]] += widths[node] + GAP;
    }
    let width = row_end.iter().copied().fold(0.0, f64::max) + GAP;
    let height = rows as f64 * ROW + GAP;
    let top = |node: usize| GAP + rank[node] as f64 * ROW;
    let centre = |node: usize| x[node] + widths[node] / 2.0;
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">\n\
         <defs><marker id=\"arrow\" markerWidth=\"8\" markerHeight=\"6\" refX=\"8\" refY=\"3\" \
         orient=\"auto\" markerUnits=\"userSpaceOnUse\"><polygon points=\"0 0, 8 3, 0 6\"/>\
         </marker></defs>\n<style>text {{ font-size: {FONT_SIZE}px; font-family: sans-serif; }}\
         </style>\n"
    );
    for (from, to, _, kind) in edges {
        let (color, width, dash) = match kind {
            EdgeKind::Unguarded => ("red", 3, ""),
            EdgeKind::Guarded => ("orange", 2, " stroke-dasharray=\"5,5\""),
            EdgeKind::Plain => ("#555", 1, ""),
        };
        let (y1, y2) = if rank[*to] > rank[*from] {
            (top(*from) + HEIGHT, top(*to))
        } else {
            (top(*from), top(*to) + HEIGHT)
        };
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{y1:.1}\" x2=\"{:.1}\" y2=\"{y2:.1}\" stroke=\"{color}\" \
             stroke-width=\"{width}\"{dash} marker-end=\"url(#arrow)\"/>",
            centre(*from),
            centre(*to)
        );
    }
    for (node, name) in nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{HEIGHT}\" rx=\"4\" \
             fill=\"white\" stroke=\"black\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             text-anchor=\"middle\">{}</text>",
            x[node],
            top(node),
            widths[node],
            centre(node),
            top(node) + HEIGHT / 2.0 + FONT_SIZE as f64 / 3.0,
            xml_escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The whole graph as SVG: unguarded cycle edges red and bold, guarded ones orange dashed,
/// each edge labelled with its count (as [`crate::to_dot`] draws it).
pub fn to_svg(graph: &LockGraph) -> String {
    let (real, guarded) = cycle_edges(graph);
    let mut index = vec![usize::MAX; graph.class_count()];
    let mut nodes = Vec::with_capacity(graph.class_count());
    for (id, class) in graph.classes() {
        index[id.index()] = nodes.len();
        nodes.push(class.name.as_str());
    }
    let edges: Vec<_> = graph
        .edges()
        .map(|e| {
            let key = (e.held, e.new);
            let kind = if real.contains(&key) {
                EdgeKind::Unguarded
            } else if guarded.contains(&key) {
                EdgeKind::Guarded
            } else {
                EdgeKind::Plain
            };
            (
                index[e.held.index()],
                index[e.new.index()],
                e.count.to_string(),
                kind,
            )
        })
        .collect();
    draw(&nodes, &edges)
}

/// One cycle as SVG: its classes and its edges, each labelled `COUNTx`.
pub fn cycle_to_svg(graph: &LockGraph, cycle: &Cycle) -> String {
    let nodes: Vec<&str> = cycle.classes.iter().map(|&c| graph.name(c)).collect();
    let kind = if cycle.guarded_by.is_some() {
        EdgeKind::Guarded
    } else {
        EdgeKind::Unguarded
    };
    let n = cycle.classes.len();
    let edges: Vec<_> = (0..n)
        .map(|i| {
            let (held, new) = (cycle.classes[i], cycle.classes[(i + 1) % n]);
            let count = graph.edge(held, new).map_or(0, |e| e.count);
            (i, (i + 1) % n, format!("{count}x"), kind)
        })
        .collect();
    draw(&nodes, &edges)
}

/// The SVG without its XML declaration, to put inline in an HTML page.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    }
}

fn mode(read: bool) -> &'static str {
    if read {
        "read"
    } else {
        "write"
    }
}

fn task_label(task: &TaskInfo) -> String {
    if task.comm.is_empty() && task.pid == 0 {
        "a task".to_string()
    } else {
        format!("{}/{} (tid {})", task.comm, task.pid, task.tid)
    }
}

fn write_stack(out: &mut String, class: ClassId, graph: &LockGraph, stack: &[Frame]) {
    let _ = write!(
        out,
        "<h4>Stack where <code>{}</code> was taken</h4>\n<pre class=\"stack\">",
        xml_escape(graph.name(class))
    );
    if stack.is_empty() {
        out.push_str("(no stack)");
    }
    for (i, frame) in stack.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&xml_escape(&frame.to_string()));
    }
    out.push_str("</pre>\n");
}

const STYLE: &str =
    "body { font-family: sans-serif; margin: 1.5em; color: #111; background: #fff; }\n\
    h1 { font-size: 1.4em; }\n\
    .state { font-weight: bold; }\n\
    .unguarded { color: #a00; }\n\
    .guarded { color: #b60; }\n\
    figure { margin: 1em 0; overflow: auto; border: 1px solid #ccc; padding: 0.5em; }\n\
    pre { background: #f6f6f6; padding: 0.6em; overflow: auto; }\n\
    section.edge { border-top: 1px solid #ddd; margin-top: 1em; }\n";

/// A self-contained HTML page (inline CSS and SVG, no external resource; well-formed XML
/// as well) for one cycle: its state, the picture, the lockdep-style text of
/// [`crate::Report::cycle_text`] and, per edge, the stacks where both locks were taken.
pub fn cycle_to_html(graph: &LockGraph, suppressions: &Suppressions, cycle: &Cycle) -> String {
    let report = graph.report(suppressions);
    let names: Vec<&str> = cycle.classes.iter().map(|&c| graph.name(c)).collect();
    let mut chain = names.clone();
    chain.push(names[0]);
    let state = report.cycle_state(cycle);
    let state_class = if cycle.guarded_by.is_some() {
        "guarded"
    } else {
        "unguarded"
    };
    let id = xml_escape(&cycle.id);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n\
         <meta charset=\"utf-8\"/>\n<title>locktrace: cycle {id}</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>Lock-order cycle <code>{id}</code></h1>\n\
         <p class=\"state {state_class}\">{}</p>\n\
         <p class=\"chain\">{}</p>\n\
         <figure>\n{}</figure>\n\
         <h2>Report</h2>\n<pre class=\"report\">{}</pre>\n\
         <h2>Dependencies</h2>\n",
        xml_escape(&state),
        xml_escape(&chain.join(" \u{2192} ")),
        inline_svg(&cycle_to_svg(graph, cycle)),
        xml_escape(report.cycle_text(cycle).trim_matches('\n')),
    );
    for (held, new) in cycle.edges() {
        let Some(e) = graph.edge(held, new) else {
            continue;
        };
        let _ = write!(
            out,
            "<section class=\"edge\">\n<h3><code>{}</code> \u{2192} <code>{}</code></h3>\n\
             <p>{} taken for {} while {} was held for {}; seen {} times, first by {}.</p>\n",
            xml_escape(graph.name(held)),
            xml_escape(graph.name(new)),
            xml_escape(graph.name(new)),
            mode(e.new_read),
            xml_escape(graph.name(held)),
            mode(e.held_read),
            e.count,
            xml_escape(&task_label(&e.task)),
        );
        write_stack(&mut out, new, graph, &e.new_stack);
        write_stack(&mut out, held, graph, &e.held_stack);
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClassInfo, ClassKey, Dependency, LockKind, NameSource};

    fn graph_with_cycle(names: &[&str]) -> LockGraph {
        let mut graph = LockGraph::new();
        let ids: Vec<ClassId> = names
            .iter()
            .map(|name| {
                graph.class(
                    ClassKey::name(*name),
                    ClassInfo::new(*name, LockKind::Mutex, NameSource::Given),
                )
            })
            .collect();
        for i in 0..ids.len() {
            graph.add_dependency(Dependency {
                held: ids[i],
                new: ids[(i + 1) % ids.len()],
                new_stack: vec![Frame::symbol(format!("take_{i}<T>"), 0x10)],
                ..Dependency::default()
            });
        }
        graph
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.tag_name().name() == "text")
            .map(|n| {
                n.descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn cycle_svg_is_xml_with_every_class_as_text() {
        let names = ["&vmm->mutex", "&svmm->mutex", "a<b>\"c\"'d'"];
        let graph = graph_with_cycle(&names);
        let cycle = &graph.cycles()[0];
        let svg = cycle_to_svg(&graph, cycle);
        let doc = roxmltree::Document::parse(&svg).expect("SVG is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts = texts(&doc);
        for name in names {
            assert!(
                texts.iter().any(|t| t == name),
                "{name} not a <text>: {texts:?}"
            );
        }
    }

    #[test]
    fn whole_graph_svg_has_every_class_and_handles_an_empty_graph() {
        let mut graph = graph_with_cycle(&["x", "y"]);
        let z = graph.class(
            ClassKey::name("z&z"),
            ClassInfo::new("z&z", LockKind::Mutex, NameSource::Given),
        );
        let x = graph.class_by_name("x").unwrap();
        graph.add_dependency(Dependency {
            held: x,
            new: z,
            ..Dependency::default()
        });
        let svg = to_svg(&graph);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts = texts(&doc);
        for name in ["x", "y", "z&z"] {
            assert!(texts.iter().any(|t| t == name), "{name}: {texts:?}");
        }
        roxmltree::Document::parse(&to_svg(&LockGraph::new())).unwrap();
    }

    #[test]
    fn a_graph_too_large_for_layout_rs_is_drawn_in_layers() {
        // A chain long enough to pass LAYOUT_LIMIT, closed into one cycle.
        let names: Vec<String> = (0..LAYOUT_LIMIT).map(|i| format!("&l{i}->m")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let graph = graph_with_cycle(&names);
        let svg = to_svg(&graph);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts = texts(&doc);
        assert_eq!(texts.len(), names.len());
        for name in &names {
            assert!(texts.iter().any(|t| t == name), "{name}");
        }
        // Every edge but the one closing the loop goes one rank down.
        let ranks = ranks(
            3,
            &[
                (0, 1, String::new(), EdgeKind::Plain),
                (1, 2, String::new(), EdgeKind::Plain),
                (2, 0, String::new(), EdgeKind::Plain),
            ],
        );
        assert_eq!(ranks, [0, 1, 2]);
    }

    #[test]
    fn cycle_html_is_well_formed_and_carries_report_and_stacks() {
        let names = ["&vmm->mutex", "&svmm->mutex"];
        let graph = graph_with_cycle(&names);
        let cycle = &graph.cycles()[0];
        let html = cycle_to_html(&graph, &Suppressions::default(), cycle);
        assert!(html.starts_with("<!DOCTYPE html>"));
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc =
            roxmltree::Document::parse_with_options(&html, options).expect("HTML is well-formed");
        let all: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .map(|n| n.text().unwrap_or_default())
            .collect();
        let report = graph.report(&Suppressions::default()).cycle_text(cycle);
        assert!(
            all.contains(report.trim_matches('\n')),
            "report text missing"
        );
        for name in names {
            assert!(all.contains(name));
        }
        assert!(all.contains("take_0<T>+0x10") && all.contains("take_1<T>+0x10"));
        assert!(doc.descendants().any(|n| n.tag_name().name() == "svg"));
        // Self-contained: nothing to fetch, every link points into the page.
        for node in doc.descendants().filter(|n| n.is_element()) {
            assert!(!matches!(node.tag_name().name(), "script" | "link" | "img"));
            assert!(node.attribute("src").is_none());
            assert!(node.attribute("href").is_none_or(|h| h.starts_with('#')));
        }
    }
}
