//! The house rules of `src/`, checked on the source text so that a change that breaks them
//! fails here rather than in a review: data moves one way (stream -> batch -> maintainer ->
//! sink), so the pipeline stages do not import each other's internals; shared vocabulary lives
//! in neutral rooms (`pg`, `change`, `bookkeeping`, `value`); no import cycle between
//! top-level modules; no file over about 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The top-level module a file of `src/` belongs to (`src/engine/batch.rs` -> `engine`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a source text refers to as `crate::<module>` (comments skipped).
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Top-level module -> the top-level modules it imports, with the files that do.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn import_graph() -> Result<Graph> {
    let src = Path::new("src");
    let mut graph = Graph::new();
    for file in rust_files(src)? {
        let from = top_module(src, &file);
        let text = std::fs::read_to_string(&file)?;
        let node = graph.entry(from.clone()).or_default();
        for to in references(&text) {
            if to != from {
                node.entry(to)
                    .or_default()
                    .insert(file.display().to_string());
            }
        }
    }
    Ok(graph)
}

/// A cycle through `start`, if there is one (depth-first).
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn visit(graph: &Graph, at: &str, start: &str, path: &mut Vec<String>) -> bool {
        for next in graph.get(at).map(|m| m.keys()).into_iter().flatten() {
            if next == start {
                return true;
            }
            if !path.contains(next) {
                path.push(next.clone());
                if visit(graph, next, start, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path).then_some(path)
}

#[test]
fn no_import_cycle_between_top_level_modules() -> Result<()> {
    let graph = import_graph()?;
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            bail!("import cycle: {} -> {module}", cycle.join(" -> "));
        }
    }
    Ok(())
}

#[test]
fn pipeline_stages_import_only_shared_vocabulary() -> Result<()> {
    let graph = import_graph()?;
    // (stage, what it must not import)
    let rules: [(&str, &[&str]); 5] = [
        ("source", &["plan", "sink", "maintain", "engine", "setup"]),
        ("sink", &["source", "maintain", "engine", "setup"]),
        (
            "pg",
            &[
                "plan",
                "source",
                "sink",
                "maintain",
                "engine",
                "setup",
                "bookkeeping",
            ],
        ),
        (
            "change",
            &["plan", "source", "sink", "maintain", "engine", "setup"],
        ),
        (
            "bookkeeping",
            &["source", "sink", "maintain", "engine", "setup", "plan"],
        ),
    ];
    let mut broken = Vec::new();
    for (stage, forbidden) in rules {
        for (to, files) in graph.get(stage).into_iter().flatten() {
            if forbidden.contains(&to.as_str()) {
                broken.push(format!(
                    "{stage} imports {to} (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    if !broken.is_empty() {
        bail!("{}", broken.join("\n"));
    }
    Ok(())
}

#[test]
fn no_source_file_over_600_lines() -> Result<()> {
    let mut long = Vec::new();
    for file in rust_files(Path::new("src"))? {
        let lines = std::fs::read_to_string(&file)?.lines().count();
        if lines > 600 {
            long.push(format!("{} has {lines} lines", file.display()));
        }
    }
    if !long.is_empty() {
        bail!("split these by their jobs:\n{}", long.join("\n"));
    }
    Ok(())
}

#[test]
fn the_readme_layout_names_every_top_level_module() -> Result<()> {
    let readme = std::fs::read_to_string("README.md")?;
    let layout = readme
        .split("## Layout")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or("");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir("src")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = if path.is_dir() {
            format!("{name}/")
        } else if name.ends_with(".rs") {
            name.clone()
        } else {
            continue;
        };
        if !layout.contains(&shown) {
            missing.push(shown);
        }
    }
    if !missing.is_empty() {
        bail!("README's Layout does not name: {}", missing.join(", "));
    }
    Ok(())
}
