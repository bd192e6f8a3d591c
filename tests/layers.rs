//! Imports run one way: the layers of orc, written down once, and a check that holds
//! the code to them.
//!
//! Each file under `src/` belongs to its top-level module (`src/agent/session.rs` to
//! `agent`). A module may import (`crate::<module>` in code, `use crate::{a, b::c}`
//! groups included) only modules on a line below its own in [`LAYERS`]; modules on one
//! line do not import each other. The check fails naming the file, the line and the
//! edge, and fails on any circle of imports between top-level modules (which the order
//! already rules out; the circle check stays as a second net for a mistaken order).
//!
//! Not counted:
//!
//! - comments, doc comments and their links (`[`crate::daemon`]` in a `//!` line is a
//!   pointer for the reader, not a dependency), and string literals;
//! - test code: the files `tests.rs` and `fuzz.rs`, files under a `tests/` directory,
//!   the test-only `src/fuzz.rs` module, and inline `#[cfg(test)] mod … { … }` blocks.
//!   A test may build a whole daemon to exercise a lower part (`keys/tests.rs` starts a
//!   node to check the modes of its files); that does not make the part depend on it.
//!
//! `lib.rs` (which declares the modules) and `main.rs` (the binary) stand above all.
//!
//! Run with `cargo test --test layers -- --nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom. A module imports only modules on lines below its own.
///
/// - `daemon`: the node's life cycle; wires everything and serves the ports.
/// - `api`: the gRPC handlers and the gate, over the shared handle; `dashboard`: the
///   web dashboard, over the manager's state.
/// - `stack`: compose files into specs.
/// - the components: `orchestrator`, `scheduler`, `dispatcher` (the leader's), then
///   `agent` (every node's), below the dispatcher because an assignment carries the
///   agent's types (`TaskNetwork`, the image sources).
/// - `host`: the shared handle (what the agent and the handlers need of their node);
///   `backup`: the backup file and its restore plan, over the manager's state.
/// - `manager`: the manager runtime (Raft node, state, proposals, the leader's session
///   table and status batcher), which the components and the handle share.
/// - `raft`; then the node's plumbing: `mesh` and `net` (the cluster port's TLS comes
///   from `ca`), `ca`, `keys`, `docker`; the generated `proto`; `metrics` (the
///   registry the parts count into); the `store`; `units` and
///   `error` at the bottom.
pub const LAYERS: &[&[&str]] = &[
    &["main", "lib", "cli"],
    &["daemon"],
    &["api", "dashboard"],
    &["stack"],
    &["orchestrator", "scheduler", "dispatcher"],
    &["agent"],
    &["host", "backup"],
    &["manager"],
    &["raft"],
    &["mesh", "net"],
    &["ca", "keys", "docker"],
    &["proto"],
    &["metrics"],
    &["store"],
    &["units", "error"],
];

/// Items `lib.rs` re-exports at the crate root, and the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

/// Test-only top-level modules, not held to the order.
const TEST_MODULES: &[&str] = &["fuzz"];

/// One `crate::<module>` use in code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    /// The file, relative to `src/`.
    file: String,
    /// 1-based line.
    line: usize,
    /// The importing top-level module.
    from: String,
    /// The imported top-level module.
    to: String,
}

/// The code of `src` with comments and string and char literals blanked (newlines kept,
/// so that line numbers hold).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                    out.push_str("  ");
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    out.push_str("  ");
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&c, i) {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '"'), or a lifetime ('a), left as it is.
            let end = if next == Some('\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &c[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// `code` without its `#[cfg(test)] mod name { … }` blocks (blanked, newlines kept).
fn without_test_blocks(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let text: String = out.iter().collect();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let start = from + at;
        let after = &text[start + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_block = (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            && trimmed
                .find(['{', ';'])
                .is_some_and(|k| trimmed.as_bytes()[k] == b'{');
        from = start + 1;
        if !is_block {
            continue;
        }
        // Blank from the attribute to the brace that closes the module.
        let open = start
            + "#[cfg(test)]".len()
            + (after.len() - trimmed.len())
            + trimmed.find('{').unwrap_or(0);
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut depth = 0;
        let mut end = text.len();
        for &(b, ch) in chars.iter().filter(|(b, _)| *b >= open) {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = b + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Byte offsets to char indices (the code is ASCII after blanking, mostly).
        let (s_idx, e_idx) = (text[..start].chars().count(), text[..end].chars().count());
        for ch in out.iter_mut().take(e_idx).skip(s_idx) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        from = end;
    }
    out.into_iter().collect()
}

/// The `crate::` uses in `src` of the file `file` (relative to `src/`).
fn uses_in(file: &str, src: &str) -> Vec<Use> {
    let from = top_module(file);
    let code = without_test_blocks(&code_only(src));
    let mut found = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut push = |at: usize, to: &str| {
        let to = ROOT_ITEMS
            .iter()
            .find(|(item, _)| *item == to)
            .map_or(to, |(_, module)| module);
        if !to.is_empty() && to != from && to != "self" && to != "super" {
            found.push(Use {
                file: file.to_string(),
                line: line_of(at),
                from: from.clone(),
                to: to.to_string(),
            });
        }
    };
    let mut search = 0;
    while let Some(k) = code[search..].find("crate::") {
        let at = search + k;
        search = at + "crate::".len();
        if at > 0 {
            let prev = code[..at].chars().next_back().unwrap_or(' ');
            if prev.is_alphanumeric() || prev == '_' {
                continue; // `mycrate::`, not `crate::`
            }
        }
        let rest = &code[search..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for ch in group.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        item.push(ch);
                    }
                    '}' if depth == 0 => break,
                    '}' => {
                        depth -= 1;
                        item.push(ch);
                    }
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => item.push(ch),
                }
            }
            items.push(item);
            for it in items {
                let first: String = it
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                push(at, &first);
            }
        } else {
            let first: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            push(at, &first);
        }
    }
    found
}

/// The top-level module of a file relative to `src/`.
fn top_module(file: &str) -> String {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// True for test-only files (see the module doc).
fn is_test_file(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name == "tests.rs"
        || name == "fuzz.rs"
        || file.contains("/tests/")
        || TEST_MODULES.contains(&top_module(file).as_str())
}

/// The line of `module` in [`LAYERS`] (0 at the top).
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// What is wrong with `uses`: edges that go up or sideways, modules not in the order,
/// and circles.
fn violations(uses: &[Use]) -> Vec<String> {
    let mut errs = Vec::new();
    for u in uses {
        match (layer_of(&u.from), layer_of(&u.to)) {
            (None, _) => errs.push(format!(
                "src/{}:{}: module `{}` is not in the layers (tests/layers.rs LAYERS)",
                u.file, u.line, u.from
            )),
            (_, None) => errs.push(format!(
                "src/{}:{}: `{}` imports `{}`, which is not in the layers (tests/layers.rs LAYERS)",
                u.file, u.line, u.from, u.to
            )),
            (Some(a), Some(b)) if b <= a => errs.push(format!(
                "src/{}:{}: `{}` imports `{}`: {} (a module imports only modules below its line)",
                u.file,
                u.line,
                u.from,
                u.to,
                if a == b {
                    "they are on one line"
                } else {
                    "a higher module"
                }
            )),
            _ => {}
        }
    }
    for circle in circles(&graph(uses)) {
        errs.push(format!("import circle: {}", circle.join(" -> ")));
    }
    errs
}

/// The graph between top-level modules.
fn graph(uses: &[Use]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in uses {
        g.entry(u.from.clone()).or_default().insert(u.to.clone());
    }
    g
}

/// Every circle found by a depth-first search, each written from its first module back
/// to it (`a -> b -> a`).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_string());
            found.push(c);
            return;
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, path, done, found);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(n, g, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses = Vec::new();
    for p in &files {
        let rel = p
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{rel}: {e}"));
        uses.extend(uses_in(&rel, &text));
    }
    println!("imports between top-level modules (tests/layers.rs):");
    for (from, to) in graph(&uses) {
        println!("  {from}: {}", to.into_iter().collect::<Vec<_>>().join(" "));
    }
    let errs = violations(&uses);
    assert!(
        errs.is_empty(),
        "{} import(s) against the layers:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

/// Every top-level module under `src/` has a line in the order.
#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(&src).expect("src/") {
        let name = e
            .expect("an entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        let module = name.strip_suffix(".rs").unwrap_or(&name).to_string();
        if layer_of(&module).is_none() && !TEST_MODULES.contains(&module.as_str()) {
            missing.push(module);
        }
    }
    assert!(missing.is_empty(), "not in LAYERS: {missing:?}");
}

// The check itself, on sources made up for it (its positive controls).

#[test]
fn an_upward_import_is_named_with_its_file_and_line() {
    let src = "//! The store.\nuse crate::error::Result;\n\nuse crate::scheduler::Constraint;\n";
    let errs = violations(&uses_in("store/mod.rs", src));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("src/store/mod.rs:4: `store` imports `scheduler`"),
        "{}",
        errs[0]
    );
}

#[test]
fn groups_count_and_comments_strings_and_tests_do_not() {
    let src = r#"
//! See [`crate::daemon`] for how this is started.
/// Links to [`crate::api::gate`] are for the reader.
use crate::{error::Result, daemon::Daemon, store::{Node, Task}};
// use crate::api;
/* crate::cli */
const S: &str = "crate::cli::run";
const Q: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use crate::daemon::Daemon;
}
"#;
    let uses = uses_in("agent/mod.rs", src);
    let to: Vec<(&str, usize)> = uses.iter().map(|u| (u.to.as_str(), u.line)).collect();
    assert_eq!(to, [("error", 4), ("daemon", 4), ("store", 4)]);
    let errs = violations(&uses);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("`agent` imports `daemon`"), "{}", errs[0]);
}

#[test]
fn a_circle_is_found() {
    let uses = [
        uses_in("store/mod.rs", "use crate::keys::Sealed;"),
        uses_in("keys/mod.rs", "use crate::store::Role;"),
    ]
    .concat();
    let errs = violations(&uses);
    assert!(
        errs.iter()
            .any(|e| e == "import circle: keys -> store -> keys"),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("`store` imports `keys`")),
        "{errs:?}"
    );
}

#[test]
fn sideways_imports_on_one_line_are_refused() {
    let errs = violations(&uses_in(
        "net/mod.rs",
        "fn f() { crate::mesh::Mesh::new(); }",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("they are on one line"), "{}", errs[0]);
}

#[test]
fn test_files_are_exempt() {
    assert!(is_test_file("keys/tests.rs"));
    assert!(is_test_file("raft/network/fuzz.rs"));
    assert!(is_test_file("fuzz.rs"));
    assert!(is_test_file("agent/tests/runner.rs"));
    assert!(!is_test_file("agent/session.rs"));
}
