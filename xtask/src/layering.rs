//! The module layering of `tracer-user`, checked by `cargo xtask test`: no circle of imports
//! among its top-level modules (a module's `crate::X` references, outside its tests). README
//! "Architecture" states the intended layers; this keeps the code from drifting into a circle
//! again.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context as _, Result};

/// Fails with the circle when the top-level modules under `src` import each other in one.
pub fn check_no_import_cycle(src: &Path) -> Result<()> {
    let graph = module_imports(src)?;
    if let Some(cycle) = find_cycle(&graph) {
        bail!(
            "{}: modules import each other in a circle: {}",
            src.display(),
            cycle.join(" -> ")
        );
    }
    Ok(())
}

/// For each top-level module (a file or a directory under `src`, `main.rs` excluded), the
/// other top-level modules it names through `crate::`.
fn module_imports(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect_rust_files(src, &mut files)?;
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let Some(first) = relative.components().next() else {
            continue;
        };
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let imports = graph.entry(module.clone()).or_default();
        imports.extend(
            crate_references(code)
                .into_iter()
                .filter(|name| *name != module),
        );
    }
    Ok(graph)
}

fn collect_rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// Top-level module names a source text reaches through `crate::`: `crate::a::b` and the
/// first segment of each item of `use crate::{a, b::c, …}`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group).unwrap_or(group.len());
            for item in top_level_items(&group[..end]) {
                if let Some(name) = leading_identifier(item) {
                    names.insert(name.to_string());
                }
            }
        } else if let Some(name) = leading_identifier(rest) {
            names.insert(name.to_string());
        }
    }
    names.remove("self");
    names
}

/// Where the `}` closing a group that starts right before `text` is.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, ch) in text.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(index),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The comma-separated items of a `use` group, nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(group[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(group[start..].trim());
    items.retain(|item| !item.is_empty());
    items
}

fn leading_identifier(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let end = text
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// One circle of the graph, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(from, to)| (from.to_string(), to.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn references_in_paths_and_use_groups_are_found() {
        let code =
            "use crate::{\n    attach::{self, kernel::AttachMode},\n    bpf, events::Record,\n};\n\
                    fn f() { crate::held::render(); }";
        let names: Vec<String> = crate_references(code).into_iter().collect();
        assert_eq!(names, ["attach", "bpf", "events", "held"]);
    }

    #[test]
    fn a_circle_is_found_and_a_layering_is_not() {
        let layered = graph(&[
            ("trace", &["held", "attach"]),
            ("held", &["attach"]),
            ("attach", &[]),
        ]);
        assert_eq!(find_cycle(&layered), None);
        let circle = graph(&[
            ("held", &["trace"]),
            ("trace", &["offline"]),
            ("offline", &["held"]),
        ]);
        let cycle = find_cycle(&circle).expect("the circle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
    }

    #[test]
    fn tracer_user_has_no_import_circle() {
        let src = crate::workspace_root().join("tracer-user/src");
        check_no_import_cycle(&src).unwrap();
    }
}
