//! Suppressions: cycles a user has reviewed and judged benign.

use crate::{model::strip_lockdep_suffix, Error, Result};

/// Cycles the user has reviewed: by id (`cyc-…`) or by class-name glob (`*` wildcard).
///
/// File syntax: one rule per line; blank lines and lines starting with `#` are ignored.
/// A glob matches a class's full name or its name without lockdep's `#N` suffix; a cycle
/// is suppressed if any of its classes matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suppressions {
    ids: Vec<String>,
    globs: Vec<String>,
}

impl Suppressions {
    pub fn parse(text: &str) -> Result<Self> {
        let mut rules = Suppressions::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("cyc-") && !line.contains('*') {
                let hex = &line[4..];
                if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::at(i + 1, format!("malformed cycle id `{line}`")));
                }
                rules.ids.push(line.to_string());
            } else {
                rules.globs.push(line.to_string());
            }
        }
        Ok(rules)
    }

    /// The rule suppressing a cycle with this id and these class names, if any.
    pub fn matching_rule(&self, id: &str, names: &[&str]) -> Option<&str> {
        if let Some(rule) = self.ids.iter().find(|rule| *rule == id) {
            return Some(rule);
        }
        self.globs
            .iter()
            .find(|glob| {
                names.iter().any(|name| {
                    glob_match(glob, name) || glob_match(glob, strip_lockdep_suffix(name))
                })
            })
            .map(String::as_str)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}
