//! Graph exports (DOT, GraphML) and snapshot algebra (merge, diff).

use std::{collections::HashSet, fmt::Write as _};

use crate::{
    graph::{ClassId, LockGraph},
    snapshot::ReportJson,
    Result, Suppressions,
};

pub(crate) type EdgeSet = HashSet<(ClassId, ClassId)>;

/// Edges on unguarded cycles, and edges on guarded ones.
pub(crate) fn cycle_edges(graph: &LockGraph) -> (EdgeSet, EdgeSet) {
    let (mut real, mut guarded) = (HashSet::new(), HashSet::new());
    for cycle in graph.cycles() {
        let set = if cycle.guarded_by.is_none() {
            &mut real
        } else {
            &mut guarded
        };
        set.extend(cycle.edges());
    }
    (real, guarded)
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: unguarded cycle edges red and bold, guarded cycle edges orange dashed.
pub fn to_dot(graph: &LockGraph) -> String {
    let (real, guarded) = cycle_edges(graph);
    let mut out = String::from("digraph locktrace {\n  node [shape=box];\n");
    for (id, class) in graph.classes() {
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\"];",
            id.index(),
            dot_escape(&class.name)
        );
    }
    for edge in graph.edges() {
        let key = (edge.held, edge.new);
        let style = if real.contains(&key) {
            ", color=red, penwidth=3, style=bold"
        } else if guarded.contains(&key) {
            ", color=orange, style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"{}\"{style}];",
            edge.held.index(),
            edge.new.index(),
            edge.count
        );
    }
    out.push_str("}\n");
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// GraphML with node `name`/`kind` and edge `count`/`first_seen_ns`/`cycle` attributes
/// (`cycle`: `unguarded`, `guarded` or empty).
pub fn to_graphml(graph: &LockGraph) -> String {
    let (real, guarded) = cycle_edges(graph);
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\">\n\
         \x20 <key id=\"name\" for=\"node\" attr.name=\"name\" attr.type=\"string\"/>\n\
         \x20 <key id=\"kind\" for=\"node\" attr.name=\"kind\" attr.type=\"string\"/>\n\
         \x20 <key id=\"count\" for=\"edge\" attr.name=\"count\" attr.type=\"long\"/>\n\
         \x20 <key id=\"first_seen_ns\" for=\"edge\" attr.name=\"first_seen_ns\" \
         attr.type=\"long\"/>\n\
         \x20 <key id=\"cycle\" for=\"edge\" attr.name=\"cycle\" attr.type=\"string\"/>\n\
         \x20 <graph id=\"locktrace\" edgedefault=\"directed\">\n",
    );
    for (id, class) in graph.classes() {
        let kind = serde_json::to_value(class.info.kind)
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    <node id=\"n{}\"><data key=\"name\">{}</data>\
             <data key=\"kind\">{kind}</data></node>",
            id.index(),
            xml_escape(&class.name)
        );
    }
    for (i, edge) in graph.edges().enumerate() {
        let key = (edge.held, edge.new);
        let cycle = if real.contains(&key) {
            "unguarded"
        } else if guarded.contains(&key) {
            "guarded"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    <edge id=\"e{i}\" source=\"n{}\" target=\"n{}\"><data key=\"count\">{}</data>\
             <data key=\"first_seen_ns\">{}</data><data key=\"cycle\">{cycle}</data></edge>",
            edge.held.index(),
            edge.new.index(),
            edge.count,
            edge.first_seen_ns
        );
    }
    out.push_str("  </graph>\n</graphml>\n");
    out
}

/// Unions graphs by class name: counts and stats add up, first-seen is the minimum,
/// guards unite; cycles of the inputs are kept and cycles the union closes are found.
pub fn merge<'a>(graphs: impl IntoIterator<Item = &'a LockGraph>) -> Result<LockGraph> {
    let none = Suppressions::default();
    let mut merged = LockGraph::new();
    for graph in graphs {
        merged.absorb(&graph.report(&none).json())?;
    }
    Ok(merged)
}

/// What appeared in `new` that `old` did not have (compared by class name and cycle id).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphDiff {
    pub new_dependencies: Vec<NewDependency>,
    pub new_cycles: Vec<NewCycle>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewDependency {
    pub held: String,
    pub new: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewCycle {
    pub id: String,
    pub classes: Vec<String>,
    pub guarded_by: Option<String>,
    pub suppressed: bool,
}

impl NewCycle {
    /// A possible deadlock: neither guarded by an outer lock nor suppressed.
    pub fn is_unguarded(&self) -> bool {
        self.guarded_by.is_none() && !self.suppressed
    }
}

pub fn diff(old: &LockGraph, new: &LockGraph) -> GraphDiff {
    let none = Suppressions::default();
    let (old, new): (ReportJson, ReportJson) = (old.report(&none).json(), new.report(&none).json());
    let old_edges: HashSet<(&str, &str)> = old
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    let old_cycles: HashSet<&str> = old.cycles.iter().map(|c| c.id.as_str()).collect();
    GraphDiff {
        new_dependencies: new
            .edges
            .iter()
            .filter(|e| !old_edges.contains(&(e.from.as_str(), e.to.as_str())))
            .map(|e| NewDependency {
                held: e.from.clone(),
                new: e.to.clone(),
            })
            .collect(),
        new_cycles: new
            .cycles
            .iter()
            .filter(|c| !old_cycles.contains(c.id.as_str()))
            .map(|c| NewCycle {
                id: c.id.clone(),
                classes: c.classes.clone(),
                guarded_by: c.guarded_by.clone(),
                suppressed: c.suppressed,
            })
            .collect(),
    }
}
