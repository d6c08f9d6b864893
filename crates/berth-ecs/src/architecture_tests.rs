//! Keeps the crate's layering true: reads every source file's `crate::…`
//! paths (outside its `#[cfg(test)]` module) and fails on an import the
//! layering forbids, or on an import cycle between modules.
//!
//! The rule (docs/ARCHITECTURE.md, `crates/berth-ecs`):
//! - `state` imports only `state` (and the shared `error`);
//! - `launch` imports only `state` and `launch`;
//! - an `api` module imports only `state` and `launch`, never another `api`
//!   module (only `api/mod.rs`, the dispatch, names them);
//! - a `control` module imports only `state` and `launch`, never `api` or
//!   another `control` module;
//! - `error` imports only `state::keys`; `lib.rs` and the test-only
//!   modules (`test_support`, `placement_sequences`) may name anything;
//! - no two modules import each other, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path under `src/`, e.g. `state/tasks`, `api` (mod.rs),
/// `error`, `lib`.
type Module = String;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut name = rel.with_extension("").to_string_lossy().replace('\\', "/");
    if let Some(dir) = name.strip_suffix("/mod") {
        name = dir.to_string();
    }
    name
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, string literals and the `#[cfg(test)]`
/// module (tests may import anything).
fn code_of(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    let mut out = String::with_capacity(source.len());
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            // A character literal ('"', '\'', '{'); a lifetime stays.
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 3,
            b'\'' if bytes.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    out
}

/// The paths after each `crate::`, with `{…}` groups expanded, e.g.
/// `crate::state::{keys::Scope, tasks}` gives `state::keys::Scope` and
/// `state::tasks`.
fn crate_paths(code: &str) -> Vec<String> {
    fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
        let rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(prefix, &group[start..i], out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(prefix, &group[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let segment: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if segment.is_empty() {
            if !prefix.is_empty() {
                out.push(prefix.to_string());
            }
            return;
        }
        let path = if prefix.is_empty() {
            segment.clone()
        } else {
            format!("{prefix}::{segment}")
        };
        let after = &rest[segment.len()..];
        match after.strip_prefix("::") {
            Some(more) => expand(&path, more, out),
            None => out.push(path),
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        let preceded = code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        at = start + "crate::".len();
        if !preceded {
            expand("", &code[at..], &mut out);
        }
    }
    out
}

/// The module a path names: the longest prefix of it that is a module.
fn target(path: &str, modules: &BTreeSet<Module>) -> Option<Module> {
    let segments: Vec<&str> = path.split("::").filter(|s| *s != "self").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("/"))
        .find(|m| modules.contains(m))
}

fn layer(module: &str) -> &str {
    module.split('/').next().unwrap_or(module)
}

/// Why `from` may not import `to`, or `None` when it may.
fn forbidden(from: &str, to: &str) -> Option<&'static str> {
    const TEST_ONLY: [&str; 3] = ["architecture_tests", "test_support", "placement_sequences"];
    if from == to || from == "lib" || TEST_ONLY.contains(&from) {
        return None;
    }
    let (from_layer, to_layer) = (layer(from), layer(to));
    if to == "error" {
        return None;
    }
    match from_layer {
        "error" => (to != "state/keys").then_some("`error` names only `state::keys`"),
        "state" => (to_layer != "state").then_some("`state` imports only `state`"),
        "launch" => (!matches!(to_layer, "state" | "launch"))
            .then_some("`launch` imports only `state` and `launch`"),
        "api" if from == "api" => None,
        "api" => match to_layer {
            "state" | "launch" => None,
            "api" => Some("an `api` module never imports another `api` module"),
            _ => Some("`api` imports only `state` and `launch`"),
        },
        "control" => match to_layer {
            "state" | "launch" => None,
            "control" => Some("a `control` module never imports another `control` module"),
            _ => Some("`control` imports only `state` and `launch`"),
        },
        _ => Some("every module belongs to a layer: state, launch, api or control"),
    }
}

type Graph = BTreeMap<Module, BTreeSet<Module>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let from = module_of(&src, file);
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let imports = graph.entry(from.clone()).or_default();
        for path in crate_paths(&code_of(&source)) {
            if let Some(to) = target(&path, &modules) {
                if to != from {
                    imports.insert(to);
                }
            }
        }
    }
    graph
}

fn violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (from, imports) in graph {
        for to in imports {
            if let Some(why) = forbidden(from, to) {
                out.push(format!("{from} imports {to}: {why}"));
            }
        }
    }
    out
}

/// A cycle among the modules below the top (`lib`), if any.
fn cycle(graph: &Graph) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &Graph,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = stack.iter().position(|m| m == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if next == "lib" {
                continue;
            }
            if let Some(c) = visit(next, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn layers_import_only_what_the_layering_allows() {
    let graph = graph();
    assert!(graph.contains_key("state/tasks") && graph.contains_key("api/tasks"));
    let bad = violations(&graph);
    assert!(bad.is_empty(), "forbidden imports:\n{}", bad.join("\n"));
}

#[test]
fn modules_do_not_import_each_other_in_circles() {
    let graph = graph();
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_sees_what_it_must_refuse() {
    let code = code_of(
        "use crate::state::{keys::Scope, tasks};\nuse crate::api::tasks::run;\n\
         // use crate::control::gc;\nfn f() { crate::launch::ec2::place(); let s = \"crate::control\"; }\n\
         #[cfg(test)]\nmod tests { use crate::control::gc; }",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths,
        [
            "state::keys::Scope",
            "state::tasks",
            "api::tasks::run",
            "launch::ec2::place"
        ]
    );
    let modules: BTreeSet<Module> = ["state/keys", "state/tasks", "api/tasks", "launch/ec2"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        target("state::keys::Scope", &modules).as_deref(),
        Some("state/keys")
    );
    assert!(forbidden("api/services", "api/tasks").is_some());
    assert!(forbidden("state/tasks", "launch/usage").is_some());
    assert!(forbidden("launch/ec2", "api/tasks").is_some());
    assert!(forbidden("control/agent_api", "control/gc").is_some());
    assert!(forbidden("control/agent_api", "api/tasks").is_some());
    assert!(forbidden("api/tasks", "launch/ec2").is_none());
    assert!(forbidden("api", "api/tasks").is_none());
    let mut looped = Graph::new();
    looped.insert("a".into(), ["b".to_string()].into());
    looped.insert("b".into(), ["a".to_string()].into());
    assert!(cycle(&looped).is_some());
}
