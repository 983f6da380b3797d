//! Which views are incremental, which are fallback and which are broken, and in what order they
//! are created.
//!
//! This is its own room because the decision is the heart of `init` and of every command that
//! prepares the engine, yet needs nothing but the parsed view files, the catalog of source tables,
//! the settings and the names a previous `init` recorded. Pure: no I/O, no logging, no server;
//! reading those inputs is `crate::setup`'s job, and so is acting on the outcome (creating
//! targets and materialized views, recording broken views). Keeping it pure lets unit tests
//! pin each outcome without PostgreSQL.
//!
//! The rules, for each view in dependency order:
//! - it plans: incremental;
//! - the planner refuses its construct (`PlanError::Unsupported`), or `mode = "fallback"` asks
//!   for it, or it reads a fallback view: fallback when it declares a UNIQUE index (REFRESH
//!   MATERIALIZED VIEW CONCURRENTLY needs one), else an error naming the fix;
//! - any other planning error on a view a previous `init` recorded: broken (it lost something
//!   it reads to a schema change; the others go on), else an error.
//!
//! A view over a broken view does not plan either (its input is neither a planned view nor a
//! source table), so it is broken too where it was recorded before.

use std::collections::BTreeMap;

use super::parse::ViewFile;
use super::{plan_view, relations, FallbackPlan, PlanError, ViewError, ViewPlan};
use crate::pg::{Catalog, QualifiedName};
use crate::pgtime::PgTimeZone;
use crate::settings::{Mode, Settings};

/// The outcome of [`classify`].
#[derive(Debug)]
pub struct Classified {
    /// The incremental views, sorted by name (positions are view ids in the state store).
    pub plans: Vec<ViewPlan>,
    /// Indexes into `plans`, every view after the views it reads (targets are created so).
    pub creation_order: Vec<usize>,
    /// Views kept as refreshed materialized views, each after the views it reads.
    pub fallbacks: Vec<FallbackPlan>,
    /// Views that ran before but no longer plan against the current tables, and why.
    pub broken: Vec<(QualifiedName, String)>,
}

/// Sorts the views of `files` into incremental, fallback and broken. `order` is
/// [`super::deps::dependency_order`] of `files`; `known` the views a previous `init` recorded.
/// The first view that can be neither is the error.
pub fn classify(
    files: &[ViewFile],
    order: &[usize],
    catalog: &Catalog,
    settings: &Settings,
    known: &[String],
    tz: &PgTimeZone,
) -> Result<Classified, ViewError> {
    let mut planned: BTreeMap<QualifiedName, ViewPlan> = BTreeMap::new();
    let mut fallbacks: Vec<FallbackPlan> = Vec::new();
    let mut topo = Vec::new();
    let mut broken = Vec::new();
    for &i in order {
        let f = &files[i];
        let reads = relations(&f.query);
        let forced = settings.view(&f.name.to_string()).mode == Mode::Fallback;
        let reads_fallback = reads
            .iter()
            .find(|r| fallbacks.iter().any(|fb| &fb.name == *r));
        let outcome = match (forced, reads_fallback) {
            (true, _) => Err(PlanError::Unsupported(
                "mode = \"fallback\" in deltamv.toml".into(),
            )),
            (false, Some(fb)) => Err(PlanError::Unsupported(format!(
                "it reads fallback view {fb}"
            ))),
            (false, None) => plan_view(f, catalog, &planned, tz).map_err(|e| e.error),
        };
        match outcome {
            Ok(plan) => {
                topo.push(plan.name.clone());
                planned.insert(plan.name.clone(), plan);
            }
            Err(PlanError::Unsupported(reason)) if has_unique_index(f) => fallbacks.push(FallbackPlan {
                name: f.name.clone(),
                file: f.path.clone(),
                query_sql: f.query_sql.clone(),
                index_sql: f.index_sql.clone(),
                reason,
                reads,
            }),
            Err(PlanError::Unsupported(reason)) => {
                return Err(ViewError {
                    view: f.name.to_string(),
                    file: f.path.display().to_string(),
                    error: PlanError::Unsupported(format!(
                        "{reason}; declare a UNIQUE index on the view to keep it as a materialized view that deltamv refreshes"
                    )),
                })
            }
            // A view that ran before and no longer plans lost a column it reads to a schema
            // change (DROP, RENAME, type change): it fails alone, the others go on.
            Err(error) if known.contains(&f.name.to_string()) => {
                broken.push((f.name.clone(), format!("{error}; fix the view or the source table, then run `deltamv init --resync`")));
            }
            Err(error) => {
                return Err(ViewError { view: f.name.to_string(), file: f.path.display().to_string(), error })
            }
        }
    }
    let plans: Vec<ViewPlan> = planned.into_values().collect();
    let creation_order = topo
        .iter()
        .filter_map(|n| plans.iter().position(|p| &p.name == n))
        .collect();
    Ok(Classified {
        plans,
        creation_order,
        fallbacks,
        broken,
    })
}

/// Whether the settings refuse this fallback view: `require_incremental` is set for it and it
/// did not ask for `mode = "fallback"` (that is exempt).
pub fn refuses_fallback(fb: &FallbackPlan, settings: &Settings) -> bool {
    let settings = settings.view(&fb.name.to_string());
    settings.require_incremental && settings.mode != Mode::Fallback
}

fn has_unique_index(f: &ViewFile) -> bool {
    f.index_sql.iter().any(|sql| {
        sql.trim_start()
            .to_uppercase()
            .starts_with("CREATE UNIQUE INDEX")
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::deps::dependency_order;
    use crate::plan::fixtures::seed_catalog;
    use crate::plan::parse::parse_view_file;

    /// A view file `name.sql` defining `name` as `query`, with a unique index when `unique`.
    fn view(name: &str, query: &str, unique: bool) -> ViewFile {
        let index = if unique {
            format!("CREATE UNIQUE INDEX ON {name} (workspace_id);")
        } else {
            String::new()
        };
        let text = format!("CREATE MATERIALIZED VIEW {name} AS {query};\n{index}");
        parse_view_file(Path::new(&format!("{name}.sql")), &text)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn run(files: &[ViewFile], settings: &str, known: &[&str]) -> Result<Classified, ViewError> {
        let order = dependency_order(files).unwrap_or_else(|e| panic!("{e}"));
        let settings = Settings::parse(settings).unwrap_or_else(|e| panic!("{e}"));
        let known: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        classify(
            files,
            &order,
            &seed_catalog(),
            &settings,
            &known,
            &PgTimeZone::UTC,
        )
    }

    fn names<'a>(it: impl Iterator<Item = &'a QualifiedName>) -> Vec<String> {
        it.map(|n| n.to_string()).collect()
    }

    const PER_WORKSPACE: &str =
        "SELECT workspace_id, COUNT(*) AS runs FROM public.agent_runs GROUP BY workspace_id";
    /// PostgreSQL accepts a join; the planner refuses it (`Unsupported`).
    const JOINED: &str = "SELECT r.workspace_id, COUNT(*) AS n FROM public.agent_runs r
        JOIN analytics.user_activity u ON u.user_id = r.user_id GROUP BY r.workspace_id";
    /// Reads a column no source table has (as after a DROP COLUMN): `Invalid`.
    const LOST_COLUMN: &str =
        "SELECT workspace_id, SUM(dropped_column) AS total FROM public.agent_runs GROUP BY workspace_id";

    #[test]
    fn a_view_the_planner_supports_is_incremental() {
        let c = run(&[view("a.per_ws", PER_WORKSPACE, true)], "", &[]).expect("classifies");
        assert_eq!(names(c.plans.iter().map(|p| &p.name)), ["a.per_ws"]);
        assert_eq!(c.creation_order, [0]);
        assert!(c.fallbacks.is_empty() && c.broken.is_empty());
    }

    #[test]
    fn a_refused_construct_with_a_unique_index_falls_back_with_its_reason() {
        let c = run(&[view("a.joined", JOINED, true)], "", &[]).expect("classifies");
        assert!(c.plans.is_empty() && c.creation_order.is_empty());
        let [fb] = c.fallbacks.as_slice() else {
            panic!("one fallback: {:?}", c.fallbacks)
        };
        assert_eq!(fb.name.to_string(), "a.joined");
        assert_eq!(fb.reason, "JOIN");
        assert_eq!(
            names(fb.reads.iter()),
            ["public.agent_runs", "analytics.user_activity"]
        );
        assert_eq!(fb.file, Path::new("a.joined.sql"));
    }

    #[test]
    fn a_refused_construct_without_a_unique_index_is_an_error_naming_the_fix() {
        let err = run(&[view("a.joined", JOINED, false)], "", &[]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "view a.joined (a.joined.sql): unsupported: JOIN; declare a UNIQUE index on the view to keep it as a materialized view that deltamv refreshes"
        );
    }

    #[test]
    fn mode_fallback_in_the_settings_forces_a_supported_view_to_fall_back() {
        let c = run(
            &[view("a.per_ws", PER_WORKSPACE, true)],
            "[views.\"a.per_ws\"]\nmode = \"fallback\"\n",
            &[],
        )
        .expect("classifies");
        assert!(c.plans.is_empty());
        assert_eq!(c.fallbacks[0].reason, "mode = \"fallback\" in deltamv.toml");
    }

    #[test]
    fn a_view_that_no_longer_plans_is_broken_if_known_else_an_error() {
        let files = [
            view("a.lost", LOST_COLUMN, true),
            view("a.per_ws", PER_WORKSPACE, true),
        ];
        let c = run(&files, "", &["a.lost", "a.per_ws"]).expect("classifies");
        assert_eq!(names(c.plans.iter().map(|p| &p.name)), ["a.per_ws"]);
        let [(name, why)] = c.broken.as_slice() else {
            panic!("one broken: {:?}", c.broken)
        };
        assert_eq!(name.to_string(), "a.lost");
        assert_eq!(
            why,
            "invalid: column \"dropped_column\" does not exist; fix the view or the source table, then run `deltamv init --resync`"
        );

        let err = run(&files, "", &["a.per_ws"]).expect_err("a new view that does not plan");
        assert_eq!(
            err.to_string(),
            "view a.lost (a.lost.sql): invalid: column \"dropped_column\" does not exist"
        );
    }

    #[test]
    fn a_view_over_a_fallback_view_falls_back_and_over_a_broken_view_breaks() {
        let over = |input: &str| {
            format!("SELECT workspace_id, SUM(n) AS n FROM {input} GROUP BY workspace_id")
        };
        let c = run(
            &[
                view("a.joined", JOINED, true),
                view("a.over_joined", &over("a.joined"), true),
            ],
            "",
            &[],
        )
        .expect("classifies");
        assert!(c.plans.is_empty());
        assert_eq!(
            names(c.fallbacks.iter().map(|f| &f.name)),
            ["a.joined", "a.over_joined"]
        );
        assert_eq!(c.fallbacks[1].reason, "it reads fallback view a.joined");
        // Without a unique index it cannot fall back.
        let err = run(
            &[
                view("a.joined", JOINED, true),
                view("a.over_joined", &over("a.joined"), false),
            ],
            "",
            &[],
        )
        .expect_err("refused");
        assert!(
            err.to_string()
                .contains("it reads fallback view a.joined; declare a UNIQUE index"),
            "{err}"
        );

        let lost = "SELECT workspace_id, SUM(dropped_column) AS n FROM public.agent_runs GROUP BY workspace_id";
        let c = run(
            &[
                view("a.lost", lost, true),
                view("a.over_lost", &over("a.lost"), true),
            ],
            "",
            &["a.lost", "a.over_lost"],
        )
        .expect("classifies");
        assert!(c.plans.is_empty() && c.fallbacks.is_empty());
        assert_eq!(
            names(c.broken.iter().map(|(n, _)| n)),
            ["a.lost", "a.over_lost"]
        );
        assert!(
            c.broken[1]
                .1
                .contains("table a.lost is not a published source table"),
            "{}",
            c.broken[1].1
        );
    }

    #[test]
    fn require_incremental_refuses_fallbacks_except_those_that_asked_for_it() {
        let files = [
            view("a.joined", JOINED, true),
            view("a.per_ws", PER_WORKSPACE, true),
        ];
        let settings =
            "[defaults]\nrequire_incremental = true\n[views.\"a.per_ws\"]\nmode = \"fallback\"\n";
        let c = run(&files, settings, &[]).expect("classifies");
        let parsed = Settings::parse(settings).unwrap_or_else(|e| panic!("{e}"));
        let refused: Vec<String> = c
            .fallbacks
            .iter()
            .filter(|fb| refuses_fallback(fb, &parsed))
            .map(|fb| fb.name.to_string())
            .collect();
        assert_eq!(refused, ["a.joined"]);
        // Without require_incremental nothing is refused; `--require-incremental` refuses all
        // but the one set to mode = "fallback".
        let mut defaults = Settings::parse("").unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.fallbacks.iter().any(|fb| refuses_fallback(fb, &defaults)));
        defaults.require_incremental_everywhere();
        assert!(c.fallbacks.iter().all(|fb| refuses_fallback(fb, &defaults)));
    }

    #[test]
    fn plans_are_sorted_by_name_and_created_inputs_first() {
        // Files in name order, dependencies against it: z.base is read by a.mid, read by a.top.
        let files = [
            view(
                "a.mid",
                "SELECT workspace_id, SUM(runs) AS n FROM z.base GROUP BY workspace_id",
                true,
            ),
            view(
                "a.top",
                "SELECT workspace_id, MAX(n) AS n FROM a.mid GROUP BY workspace_id",
                true,
            ),
            view("m.joined", JOINED, true),
            view(
                "m.over",
                "SELECT workspace_id, SUM(n) AS n FROM m.joined GROUP BY workspace_id",
                true,
            ),
            view("z.base", PER_WORKSPACE, true),
        ];
        let c = run(&files, "", &[]).expect("classifies");
        assert_eq!(
            names(c.plans.iter().map(|p| &p.name)),
            ["a.mid", "a.top", "z.base"]
        );
        let created: Vec<String> = c
            .creation_order
            .iter()
            .map(|i| c.plans[*i].name.to_string())
            .collect();
        assert_eq!(created, ["z.base", "a.mid", "a.top"]);
        assert_eq!(
            names(c.fallbacks.iter().map(|f| &f.name)),
            ["m.joined", "m.over"]
        );
    }
}
