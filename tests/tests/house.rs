//! House rules checked on the source tree: no circle of files importing each other within a
//! crate.
//!
//! Each crate's `src/**/*.rs` is read; every `crate::…` and `super::…` path outside comments
//! (in `use` lines and in expressions, groups such as `crate::{a::X, b::Y}` expanded) is an
//! arrow from the file it is written in to the file of the deepest module it names. A circle is
//! a set of two or more files that reach each other along those arrows. A parent module naming
//! its child by a relative path (`child::X`) is not an arrow, and neither is anything in a
//! file's inline `mod tests`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Circles that exist today and are being taken apart. This list must only shrink, to empty:
/// a circle passes if all its files lie within one entry; an entry no circle needs any more
/// fails the test, so it is removed as soon as its circle is gone.
const KNOWN_CIRCLES: &[&[&str]] = &[];

const CRATES: &[&str] = &[
    "format", "io", "writer", "reader", "remote", "nbd", "qemu", "vault", "image", "tools",
    "benches", "tests",
];

#[test]
fn no_circle_of_imports_within_a_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut circles = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let graph = import_graph(&src);
        assert!(!graph.is_empty(), "{}: no source files read", src.display());
        for circle in strongly_connected(&graph) {
            let names: BTreeSet<String> = circle
                .iter()
                .map(|f| f.strip_prefix(root).unwrap().display().to_string())
                .collect();
            circles.push(names);
        }
    }
    let mut errors = Vec::new();
    for circle in &circles {
        if !KNOWN_CIRCLES
            .iter()
            .any(|known| circle.iter().all(|f| known.contains(&f.as_str())))
        {
            errors.push(format!("a circle of imports: {circle:?}"));
        }
    }
    for known in KNOWN_CIRCLES {
        if !circles
            .iter()
            .any(|c| c.iter().all(|f| known.contains(&f.as_str())))
        {
            errors.push(format!(
                "KNOWN_CIRCLES lists {known:?}, which is no circle any more: remove it"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The parser reads the forms of path this workspace uses.
#[test]
fn paths_are_read_from_uses_groups_and_expressions() {
    let text = "use crate::a::{b::X, c};\n// use crate::comment::X;\n\
                fn f() { crate::d::g(); super::e::h() }\n";
    let paths = module_paths(text, &["m".to_string(), "n".to_string()]);
    let want: BTreeSet<Vec<&str>> = [
        vec!["a", "b", "X"],
        vec!["a", "c"],
        vec!["d", "g"],
        vec!["m", "e", "h"],
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<Vec<&str>> = paths
        .iter()
        .map(|p| p.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(got, want);
}

/// Every `.rs` file under `src` with the files it imports.
fn import_graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        let text = fs::read_to_string(&file).unwrap();
        let targets = module_paths(&text, &module)
            .iter()
            .map(|path| file_of(src, path))
            .filter(|target| *target != file)
            .collect();
        graph.insert(file, targets);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The module path of `file`: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file of the deepest module of `path` that has one.
fn file_of(src: &Path, path: &[String]) -> PathBuf {
    let mut best = if src.join("lib.rs").exists() {
        src.join("lib.rs")
    } else {
        src.join("main.rs")
    };
    let mut dir = src.to_path_buf();
    for segment in path {
        let flat = dir.join(format!("{segment}.rs"));
        let nested = dir.join(segment).join("mod.rs");
        if flat.exists() {
            best = flat;
        } else if nested.exists() {
            best = nested;
        } else {
            break;
        }
        dir = dir.join(segment);
    }
    best
}

/// Every `crate::` and `super::` path in `text` (comments left out) as a path from the crate
/// root, for a file of module `module`. After a line opening an inline module (`mod tests {`),
/// one `super::` stands for the file's own module. A `mod tests {` block ends the reading.
fn module_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut inline = 0;
    for line in text.lines() {
        let code = line.split("//").next().unwrap();
        let trimmed = code.trim_start();
        if trimmed.starts_with("mod tests {") {
            // A file's unit tests may use any module of the crate (to run a case on every
            // backend, say): they are not part of the file's place in the crate.
            break;
        }
        if trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ") {
            inline += usize::from(trimmed.trim_end().ends_with('{'));
        }
        let mut rest = code;
        while let Some(at) = next_root(rest) {
            rest = &rest[at..];
            let (prefix, tail) = root_of(rest, module, inline);
            rest = tail;
            expand(prefix, &mut rest, &mut out);
        }
    }
    out
}

/// Where the next `crate::` or `super::` that starts a path begins.
fn next_root(s: &str) -> Option<usize> {
    let found = [s.find("crate::"), s.find("super::")];
    let at = found.into_iter().flatten().min()?;
    let before = s[..at].chars().next_back();
    if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
        return next_root(&s[at + 1..]).map(|n| n + at + 1);
    }
    Some(at)
}

/// The module a path's root stands for, and the text after the root.
fn root_of<'a>(s: &'a str, module: &[String], inline: usize) -> (Vec<String>, &'a str) {
    if let Some(tail) = s.strip_prefix("crate::") {
        return (Vec::new(), tail);
    }
    let mut supers: usize = 0;
    let mut tail = s;
    while let Some(t) = tail.strip_prefix("super::") {
        supers += 1;
        tail = t;
    }
    let up = supers.saturating_sub(inline.min(1));
    let keep = module.len().saturating_sub(up);
    (module[..keep].to_vec(), tail)
}

/// Reads `a::b::{c, d::e}` from the start of `rest` onto `prefix`, pushing each full path.
fn expand(prefix: Vec<String>, rest: &mut &str, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        let s = rest.trim_start();
        if let Some(group) = s.strip_prefix('{') {
            *rest = group;
            loop {
                expand(path.clone(), rest, out);
                let s = rest.trim_start();
                if let Some(after) = s.strip_prefix(',') {
                    *rest = after;
                } else {
                    *rest = s.strip_prefix('}').unwrap_or(s);
                    return;
                }
                if rest.trim_start().starts_with('}') {
                    *rest = rest.trim_start().strip_prefix('}').unwrap();
                    return;
                }
            }
        }
        let len = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if len == 0 {
            *rest = s;
            break;
        }
        path.push(s[..len].to_string());
        let after = &s[len..];
        match after.strip_prefix("::") {
            Some(next) => *rest = next,
            None => {
                *rest = after;
                break;
            }
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// The sets of two or more files that reach each other (Tarjan's algorithm).
fn strongly_connected(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let nodes: Vec<&PathBuf> = graph.keys().collect();
    let index_of: BTreeMap<&PathBuf, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            graph[*n]
                .iter()
                .filter_map(|t| index_of.get(t).copied())
                .collect()
        })
        .collect();
    let mut t = Tarjan {
        edges: &edges,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        stack: Vec::new(),
        on_stack: vec![false; nodes.len()],
        next: 0,
        out: Vec::new(),
    };
    for v in 0..nodes.len() {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|i| nodes[i].clone()).collect())
        .collect()
}

struct Tarjan<'a> {
    edges: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    on_stack: Vec<bool>,
    next: usize,
    out: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.edges[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            loop {
                let w = self.stack.pop().unwrap();
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.out.push(component);
        }
    }
}
