//! The order a table's snapshot is read in: its views' group columns, the most shared and then
//! the coarsest first, and only as many as it takes for the rows sharing the leading values to
//! fit a load chunk (PostgreSQL's sort costs more per column).

use super::*;

const CHUNK: f64 = 20_000.0;

/// agent_runs's position among the tables, and a function naming its columns' positions.
fn agent_runs(m: &Maintainer) -> (usize, impl Fn(&str) -> usize + '_) {
    let t = (0..m.table_count())
        .find(|t| m.tables[*t].name.name == "agent_runs")
        .expect("the seed catalog has agent_runs");
    let column = move |name: &str| {
        (m.tables[t].columns.iter())
            .position(|c| c.name == name)
            .expect("a column of agent_runs")
    };
    (t, column)
}

#[test]
fn a_snapshot_is_sorted_by_as_few_group_columns_as_keep_its_groups_together() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let m = maintainer(dir.path(), 1);
    let (t, column) = agent_runs(&m);
    let [agent, workspace, user, started, error] = [
        "agent_id",
        "workspace_id",
        "user_id",
        "started_at",
        "error_code",
    ]
    .map(&column);
    let stats = |rows: f64, estimates: &[(usize, f64)]| {
        let mut distinct = vec![None; m.tables[t].columns.len()];
        for &(c, n) in estimates {
            distinct[c] = Some(n);
        }
        TableStats { rows, distinct }
    };

    // Never analyzed: every group column, those all four views group by first (in the order
    // the views name them), then started_at (two views), then the rest.
    let unknown = m.load_order(t, &TableStats::default(), CHUNK);
    assert_eq!(unknown, vec![agent, workspace, started, error, user]);

    // The benchmark's shape: 5M runs in 2,000 workspaces of 10 agents. A workspace's 2,500
    // rows fit a chunk: its groups in every view, and the workspace's own group in the outer
    // stages, arrive together.
    let shape = [(agent, 20_000.0), (workspace, 2_000.0), (user, 50_000.0)];
    assert_eq!(m.load_order(t, &stats(5e6, &shape), CHUNK), vec![workspace]);

    // Ten workspaces: half a million rows each; by agent within them, 250.
    let few = [(agent, 20_000.0), (workspace, 10.0), (user, 50_000.0)];
    assert_eq!(
        m.load_order(t, &stats(5e6, &few), CHUNK),
        vec![workspace, agent]
    );

    // An unknown estimate on the way: every column from there on, estimated ones before
    // unknown ones among columns as many views group by.
    let unsure = [(workspace, 10.0), (user, 50_000.0)];
    assert_eq!(
        m.load_order(t, &stats(5e6, &unsure), CHUNK),
        vec![workspace, agent, started, user, error]
    );

    // A table smaller than a chunk is not sorted at all.
    assert!(m.load_order(t, &stats(1_000.0, &shape), CHUNK).is_empty());
}
