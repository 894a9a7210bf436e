//! The house rules of the crate's layout, checked on the source: the engine never imports the tools (`app`), the
//! engine's modules import each other without a cycle, and each stays within its layer (the policy is a leaf
//! over the leaf types). `cargo test architecture -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Leaf types: they may import each other only.
const LEAVES: &[&str] = &[
    "error",
    "lazy_json",
    "mask",
    "message",
    "metrics",
    "outcome",
    "shutdown",
    "telemetry",
];

/// What each engine module may import besides the leaves. Listed top down; a module missing here fails the test,
/// so a new module is placed deliberately.
const ALLOWED: &[(&str, &[&str])] = &[
    ("api", &["config", "operator", "provider", "store"]),
    ("operator", &["store"]),
    (
        "worker",
        &[
            "callbacks",
            "config",
            "maintenance",
            "policy",
            "provider",
            "receipts",
            "server",
            "store",
        ],
    ),
    ("callbacks", &["config", "policy", "provider", "store"]),
    ("server", &["receipts", "store"]),
    ("maintenance", &["config", "store"]),
    ("receipts", &["config", "provider", "store"]),
    ("provider", &["config"]),
    ("store", &["config"]),
    ("config", &["policy"]),
    ("policy", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/policy/quiet_hours.rs` → `policy`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The `crate::NAME` references of a file's non-test code (everything before its `#[cfg(test)]` module),
/// comments left out (a doc link is not a dependency).
fn imports(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let code: String = code
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // Skip `tidings_client::…` and the like: only a bare `crate::` counts.
        if i > 0 && {
            let before = code.as_bytes()[i - 1];
            before.is_ascii_alphanumeric() || before == b'_'
        } {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b}` groups are not used in this crate; `crate::Error`/`crate::USE_CASES` are the root's.
        if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            found.insert(name);
        }
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|d| *d != module));
    }
    graph
}

#[test]
fn the_engine_never_imports_the_tools() {
    let graph = module_graph();
    for (module, deps) in &graph {
        if module != "app" {
            assert!(
                !deps.contains("app"),
                "engine module `{module}` imports `crate::app`: {deps:?}"
            );
        }
    }
}

#[test]
fn engine_modules_stay_in_their_layers_without_cycles() {
    let graph = module_graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    println!("module graph (each engine module and what it imports):");
    for (module, deps) in &graph {
        println!(
            "  {module:12} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        if module == "app" {
            continue;
        }
        let permitted: BTreeSet<&str> = if LEAVES.contains(&module.as_str()) {
            LEAVES.iter().copied().collect()
        } else {
            let Some(extra) = allowed.get(module.as_str()) else {
                panic!(
                    "module `{module}` has no place in tests/it/architecture.rs: add it to ALLOWED or LEAVES"
                );
            };
            LEAVES.iter().chain(extra.iter()).copied().collect()
        };
        for dep in deps {
            assert!(
                permitted.contains(dep.as_str()),
                "`{module}` imports `{dep}`, which is not below it (allowed: {permitted:?})"
            );
        }
    }
    // No cycle: repeatedly remove modules whose imports are all removed already.
    let mut left: BTreeMap<&String, BTreeSet<&String>> = graph
        .iter()
        .map(|(m, deps)| (m, deps.iter().filter(|d| graph.contains_key(*d)).collect()))
        .collect();
    let mut order = Vec::new();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(m, _)| *m)
            .collect();
        assert!(!ready.is_empty(), "import cycle among {:?}", left.keys());
        for m in ready {
            left.remove(m);
            order.push(m.clone());
            for deps in left.values_mut() {
                deps.remove(m);
            }
        }
    }
    println!("bottom-up order: {}", order.join(" < "));
}

#[test]
fn the_import_scanner_sees_what_it_should() {
    let text = "//! See [`crate::worker`].\nuse crate::policy::Decision;\nuse tidings_client::Status;\nfn f() { crate::store::x(); }\n#[cfg(test)]\nmod tests {\n    use crate::config::Config;\n}\n";
    assert_eq!(
        imports(text),
        ["policy", "store"].iter().map(|s| s.to_string()).collect()
    );
}
