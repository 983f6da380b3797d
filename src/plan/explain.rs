//! The plan printout: what `deltamv explain` shows of a view, an indented tree of its stages
//! (or, for a fallback view, why it is refreshed in full and after changes to what).
//!
//! Its own room because the printout is a user-facing contract (operators read it to see what
//! state a view keeps and why it is not incremental) that should change only on purpose: the
//! snapshot tests below fail on any change. Pure formatting of a finished plan: it plans nothing
//! and reads nothing.

use std::fmt;

use super::{AggFunc, FallbackPlan, Stage, StageInput, ViewPlan};

/// What `deltamv explain --view NAME` prints (without the final newline): the fallback view
/// that `view` names, else the incremental one; `None` when neither does.
pub fn explain(plans: &[ViewPlan], fallbacks: &[FallbackPlan], view: &str) -> Option<String> {
    if let Some(fb) = fallbacks.iter().find(|f| f.name.matches(view)) {
        return Some(fb.to_string().trim_end().to_string());
    }
    plans
        .iter()
        .find(|p| p.name.matches(view))
        .map(|plan| plan.to_string().trim_end().to_string())
}

impl fmt::Display for ViewPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "view {} ({})", self.name, self.file.display())?;
        let keys: Vec<&str> = self
            .key_columns
            .iter()
            .map(|i| self.last().output_names[*i].as_str())
            .collect();
        writeln!(f, "  sink: upsert changed groups by ({})", keys.join(", "))?;
        for (depth, stage) in self.stages.iter().rev().enumerate() {
            write_stage(f, stage, 2 + depth * 2)?;
        }
        Ok(())
    }
}

fn write_stage(f: &mut fmt::Formatter<'_>, s: &Stage, indent: usize) -> fmt::Result {
    let pad = " ".repeat(indent);
    if let Some(t) = &s.topk {
        let keys: Vec<String> = s.keys.iter().map(|k| k.to_string()).collect();
        let order: Vec<String> = t
            .order
            .iter()
            .map(|(c, desc, _)| format!("#{c}{}", if *desc { " DESC" } else { "" }))
            .collect();
        return writeln!(
            f,
            "{pad}top {} per [{}] by [{}]  state: the partition's rows (a change re-ranks only its partition)",
            t.limit,
            keys.join(", "),
            order.join(", ")
        );
    }
    let outs: Vec<String> = s
        .outputs
        .iter()
        .zip(&s.output_names)
        .map(|(e, n)| format!("{n} = {e}"))
        .collect();
    writeln!(f, "{pad}project [{}]", outs.join(", "))?;
    if let Some(h) = &s.having {
        writeln!(f, "{pad}  having {h}")?;
    }
    let keys: Vec<String> = s.keys.iter().map(|k| k.to_string()).collect();
    writeln!(
        f,
        "{pad}  aggregate by [{}]  state: one record per group",
        keys.join(", ")
    )?;
    for (i, a) in s.aggs.iter().enumerate() {
        let arg = a
            .arg
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "*".into());
        let filter = a
            .filter
            .as_ref()
            .map(|e| format!(" FILTER ({e})"))
            .unwrap_or_default();
        let kept = match a.func {
            AggFunc::CountStar | AggFunc::Count => "count",
            AggFunc::Sum | AggFunc::Avg => "exact sum and count",
            _ => "counted multiset value -> count",
        };
        writeln!(
            f,
            "{pad}    #agg{i} {:?}({arg}){filter} -> {}  keeps: {kept}",
            a.func,
            a.ty.pg_name()
        )?;
    }
    if let Some(w) = &s.filter {
        writeln!(f, "{pad}  filter {w}")?;
    }
    for t in &s.group_temporal {
        writeln!(
            f,
            "{pad}  time-dependent: {t}  (groups revisited when CURRENT_DATE flips it)"
        )?;
    }
    for t in &s.temporal {
        writeln!(
            f,
            "{pad}  time-dependent: {t}  (input rows revisited when CURRENT_DATE flips it)"
        )?;
    }
    match &s.input {
        StageInput::Table(t) => writeln!(f, "{pad}  scan {t}  (row images kept for retraction)"),
        StageInput::Inner => Ok(()),
    }
}

impl fmt::Display for FallbackPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "view {} ({})", self.name, self.file.display())?;
        writeln!(
            f,
            "  fallback: materialized view, REFRESH MATERIALIZED VIEW CONCURRENTLY"
        )?;
        writeln!(f, "    reason: {}", self.reason)?;
        let reads: Vec<String> = self.reads.iter().map(|r| r.to_string()).collect();
        writeln!(f, "    refreshed after changes to: {}", reads.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::fixtures::{classified, classified_with, seed_views};

    /// Compares a printout with `explain_snapshots/{name}.txt`; with DELTAMV_UPDATE_SNAPSHOTS
    /// set it writes the file instead (review the diff before committing it).
    fn assert_snapshot(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/plan/explain_snapshots")
            .join(format!("{name}.txt"));
        let actual = format!("{actual}\n");
        if std::env::var_os("DELTAMV_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &actual)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with DELTAMV_UPDATE_SNAPSHOTS=1 to write it)",
                path.display()
            )
        });
        assert!(
            actual == expected,
            "the printout of {name} changed; if that is intended, run with DELTAMV_UPDATE_SNAPSHOTS=1 and commit the new {}\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        );
    }

    fn assert_seed_view(name: &str) {
        let c = classified(&seed_views());
        assert!(c.fallbacks.is_empty(), "{:?}", c.fallbacks);
        let text =
            explain(&c.plans, &c.fallbacks, name).unwrap_or_else(|| panic!("no seed view {name}"));
        assert_snapshot(name, &text);
    }

    #[test]
    fn explain_active_users() {
        assert_seed_view("mv_active_users");
    }

    #[test]
    fn explain_agent_performance() {
        assert_seed_view("mv_agent_performance");
    }

    #[test]
    fn explain_error_summary() {
        assert_seed_view("mv_error_summary");
    }

    #[test]
    fn explain_top_agents() {
        assert_seed_view("mv_top_agents");
    }

    #[test]
    fn explain_workspace_metrics() {
        assert_seed_view("mv_workspace_metrics");
    }

    #[test]
    fn explain_a_view_over_a_view() {
        let c = classified_with(
            "schema/views/weekly.sql",
            "CREATE MATERIALIZED VIEW analytics.mv_error_weekly AS
                 SELECT workspace_id, SUM(error_count) AS errors, MAX(last_seen_at) AS last_seen
                   FROM analytics.mv_error_summary
                  WHERE error_date >= CURRENT_DATE - 7
                  GROUP BY workspace_id
                 HAVING SUM(error_count) > 0;",
        );
        let text = explain(&c.plans, &c.fallbacks, "analytics.mv_error_weekly")
            .unwrap_or_else(|| panic!("planned: {:?}", c.plans));
        assert_snapshot("mv_error_weekly", &text);
    }

    #[test]
    fn explain_a_fallback_view() {
        let c = classified_with(
            "schema/views/joined.sql",
            "CREATE MATERIALIZED VIEW analytics.mv_runs_per_activity AS
                 SELECT r.workspace_id, COUNT(*) AS runs
                   FROM public.agent_runs r JOIN analytics.user_activity u ON u.user_id = r.user_id
                  GROUP BY r.workspace_id;
                 CREATE UNIQUE INDEX ON analytics.mv_runs_per_activity (workspace_id);",
        );
        let text = explain(&c.plans, &c.fallbacks, "mv_runs_per_activity")
            .unwrap_or_else(|| panic!("fallbacks: {:?}", c.fallbacks));
        assert_eq!(
            text,
            "view analytics.mv_runs_per_activity (schema/views/joined.sql)
  fallback: materialized view, REFRESH MATERIALIZED VIEW CONCURRENTLY
    reason: JOIN
    refreshed after changes to: public.agent_runs, analytics.user_activity"
        );
    }

    #[test]
    fn explain_names_a_view_by_bare_or_qualified_name_only() {
        let c = classified(&seed_views());
        let bare = explain(&c.plans, &c.fallbacks, "mv_top_agents");
        let qualified = explain(&c.plans, &c.fallbacks, "analytics.mv_top_agents");
        assert!(bare.is_some() && bare == qualified);
        assert_eq!(explain(&c.plans, &c.fallbacks, "top_agents"), None);
        assert_eq!(
            explain(&c.plans, &c.fallbacks, "public.mv_top_agents"),
            None
        );
    }
}
