//! Dependencies between views: a view's FROM may name another maintained view.
//!
//! Views are planned in dependency order so a dependent can build on its input's plan (the
//! planner inlines the input's stages, so a dependent is maintained from the same batch, in the
//! same target transaction, and is never staler than its input). Cycles are refused with the
//! cycle spelled out.

use std::collections::BTreeMap;

use super::parse::ViewFile;
use super::{PlanError, QualifiedName};

/// The views (by index into `files`) that view `i` reads.
fn inputs(files: &[ViewFile], i: usize) -> Vec<usize> {
    super::relations(&files[i].query)
        .iter()
        .filter_map(|n| files.iter().position(|f| &f.name == n))
        .collect()
}

/// Indexes of `files` in an order where every view comes after the views it reads.
pub fn dependency_order(files: &[ViewFile]) -> Result<Vec<usize>, PlanError> {
    let deps: Vec<Vec<usize>> = (0..files.len()).map(|i| inputs(files, i)).collect();
    // 0 = not visited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; files.len()];
    let mut order = Vec::with_capacity(files.len());
    let mut path: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        mark: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match mark[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        mark[i] = 1;
        path.push(i);
        for d in &deps[i] {
            visit(*d, deps, mark, order, path)?;
        }
        path.pop();
        mark[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..files.len() {
        visit(i, &deps, &mut mark, &mut order, &mut path).map_err(|cycle| {
            let names: Vec<String> = cycle.iter().map(|c| files[*c].name.to_string()).collect();
            PlanError::Invalid(format!("views form a cycle: {}", names.join(" -> ")))
        })?;
    }
    Ok(order)
}

/// For each view name, the views that read it (for refusing to drop a view others depend on).
pub fn dependents(files: &[ViewFile]) -> BTreeMap<QualifiedName, Vec<QualifiedName>> {
    let mut out: BTreeMap<QualifiedName, Vec<QualifiedName>> = BTreeMap::new();
    for f in files {
        for n in &super::relations(&f.query) {
            out.entry(n.clone()).or_default().push(f.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::parse::parse_view_file;

    fn view(name: &str, from: &str) -> ViewFile {
        let sql = format!(
            "CREATE MATERIALIZED VIEW {name} AS SELECT x, count(*) AS n FROM {from} GROUP BY x;"
        );
        parse_view_file(Path::new(&format!("{name}.sql")), &sql).expect("parses")
    }

    #[test]
    fn inputs_come_first() {
        let files = vec![
            view("a.top", "a.mid"),
            view("a.mid", "a.base"),
            view("a.base", "public.t"),
        ];
        let order = dependency_order(&files).expect("acyclic");
        let pos = |n: usize| order.iter().position(|o| *o == n).expect("present");
        assert!(pos(2) < pos(1) && pos(1) < pos(0), "{order:?}");
    }

    #[test]
    fn cycles_are_named() {
        let files = vec![
            view("a.one", "a.two"),
            view("a.two", "a.three"),
            view("a.three", "a.one"),
        ];
        let err = dependency_order(&files).expect_err("cycle").to_string();
        assert!(err.contains("a.one -> a.two -> a.three -> a.one"), "{err}");
    }
}
