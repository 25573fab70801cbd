//! The crate's modules form no cycle: every module's `use crate::…` and `super::…` paths (tests
//! and comments aside) point one way, so each responsibility can be read and changed from the
//! modules below it. Checked on the sources, at every depth of the module tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`controller::cluster::plan`) → file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(src) else { continue };
            let Some(stem) = relative.to_str().and_then(|r| r.strip_suffix(".rs")) else { continue };
            let mut parts: Vec<&str> = stem.split('/').collect();
            if parts.last() == Some(&"mod") {
                parts.pop();
            }
            if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
                continue;
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The code of a file without its tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read module");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The module paths `prefix` is followed by in `code` (`crate::` or `super::`).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    code.match_indices(prefix)
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'));
            rest[..end.unwrap_or(rest.len())].split("::").filter(|p| !p.is_empty()).collect()
        })
        .collect()
}

/// Edges between modules, each cut to its first `depth` path segments.
fn graph(depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let cut = |module: &str| module.split("::").take(depth).collect::<Vec<_>>().join("::");
    let longest_module = |parts: &[&str]| {
        (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|candidate| modules.contains_key(candidate))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &modules {
        let code = code(path);
        let mut here: Vec<&str> = module.split("::").collect();
        if !path.ends_with("mod.rs") {
            here.pop();
        }
        let crate_paths = paths_after(&code, "crate::");
        let super_paths = paths_after(&code, "super::").into_iter().map(|p| [here.clone(), p].concat());
        for target in crate_paths.into_iter().chain(super_paths).filter_map(|p| longest_module(&p)) {
            let (from, to) = (cut(module), cut(&target));
            let nested = from.starts_with(&format!("{to}::")) || to.starts_with(&format!("{from}::"));
            if from != to && !nested {
                edges.entry(from).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].iter().cloned().chain([node.to_owned()]).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|start| visit(start, edges, &mut Vec::new(), &mut done))
}

#[test]
fn modules_form_no_cycle() {
    let top = graph(1);
    assert!(top.get("controller").is_some_and(|to| to.contains("rotation")), "the scan sees edges: {top:?}");
    for depth in 1..=3 {
        let edges = graph(depth);
        assert_eq!(cycle(&edges), None, "a module cycle at depth {depth}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let edges = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(cycle(&edges), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(cycle(&BTreeMap::from([("a".to_owned(), BTreeSet::from(["b".to_owned()]))])), None);
}
