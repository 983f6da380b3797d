//! The view parser and planner fuzzed with mutated definitions: the seed views with tokens
//! deleted, duplicated, swapped, or replaced and inserted from a pool of SQL fragments the
//! planner has opinions about. Whatever comes out, planning ends in a plan or in an error that
//! names the view and its file, never in a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deltamv::pg::{Catalog, ColumnInfo, QualifiedName, TableInfo};
use deltamv::pgtime::PgTimeZone;
use deltamv::plan::parse::parse_view_file;
use deltamv::plan::plan_view;
use deltamv::value::SqlType;
use proptest::prelude::*;
use proptest::sample::{select, Index};

const POOL: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT 10",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "(",
    ")",
    ",",
    "*",
    "-",
    "/",
    "+",
    "=",
    "<",
    ">=",
    "<>",
    "::text",
    "::numeric(12,4)",
    "::date",
    "COUNT(*)",
    "COUNT(DISTINCT user_id)",
    "SUM(credits_consumed)",
    "AVG(runtime_seconds)",
    "MIN(started_at)",
    "MAX(error_code)",
    "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY runtime_seconds)",
    "PERCENTILE_DISC(0.95) WITHIN GROUP (ORDER BY runtime_seconds DESC)",
    "FILTER (WHERE status = 'failed')",
    "OVER (PARTITION BY workspace_id ORDER BY started_at)",
    "rank()",
    "row_number()",
    "CURRENT_DATE",
    "CURRENT_DATE - INTERVAL '7 days'",
    "now()",
    "DATE(started_at)",
    "date_trunc('week', started_at)",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "COALESCE(",
    "NULLIF(",
    "'x'",
    "''",
    "0",
    "1e308",
    "-2147483648",
    "9999999999999999999999",
    "'NaN'::float8",
    "'infinity'::timestamptz",
    "DISTINCT",
    "DISTINCT ON (workspace_id)",
    "UNION ALL",
    "JOIN analytics.user_activity u ON true",
    "LATERAL",
    "WITH x AS (SELECT 1)",
    "analytics.mv_active_users",
    "public.agent_runs",
    "no_such_table",
    "no_such_column",
    "\"Mixed Case\"",
    "\"sel\"\"ect\"",
    "workspace_id",
    "status",
    "id",
    ";",
    "$1",
    "EXISTS",
    "IN (SELECT 1)",
    "BETWEEN 1 AND 2",
    "IS NOT DISTINCT FROM",
    "||",
    "LIKE '%a'",
    "~",
];

/// Expressions that fit where a column name stands: mutations that keep the syntax and so
/// reach the planner (types, aggregates in the wrong place, unknown names, edge literals).
const EXPRS: &[&str] = &[
    "workspace_id",
    "agent_id",
    "user_id",
    "status",
    "started_at",
    "runtime_seconds",
    "credits_consumed",
    "error_code",
    "created_at",
    "activity_type",
    "id",
    "no_such_column",
    "agent_runs.id",
    "u.user_id",
    "COUNT(*)",
    "SUM(credits_consumed)",
    "AVG(runtime_seconds)",
    "MAX(started_at)",
    "COUNT(DISTINCT workspace_id)",
    "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY runtime_seconds)",
    "PERCENTILE_DISC(0.9) WITHIN GROUP (ORDER BY status)",
    "rank() OVER (ORDER BY id)",
    "CASE WHEN status = 'x' THEN 1 END",
    "CASE WHEN status = 'x' THEN 'a' ELSE 2 END",
    "COALESCE(error_code, 'none')",
    "NULLIF(status, 'failed')",
    "NULL",
    "1",
    "'x'",
    "TRUE",
    "1e308 * 10",
    "(runtime_seconds / 0)",
    "runtime_seconds::numeric(5,1)",
    "status::int",
    "'infinity'::timestamptz",
    "'NaN'::float8",
    "CURRENT_DATE",
    "CURRENT_DATE - 1",
    "DATE(started_at)",
    "DATE(created_at AT TIME ZONE 'UTC')",
    "date_trunc('hour', started_at)",
    "started_at - INTERVAL '1 month'",
    "EXTRACT(epoch FROM started_at)",
    "now()",
    "random()",
    "lower(status)",
    "length(error_code)",
    "status || error_code",
    "-credits_consumed",
    "credits_consumed % 3",
    "abs(runtime_seconds)",
    "round(credits_consumed, 2)",
    "(SELECT 1)",
    "ARRAY[1]",
    "$1",
];

fn catalog() -> Catalog {
    let table = |schema: &str, name: &str, cols: &[(&str, &str, SqlType)]| TableInfo {
        name: QualifiedName::new(schema, name),
        columns: cols
            .iter()
            .map(|(n, t, ty)| ColumnInfo::plain(*n, *ty, *t))
            .collect(),
        key: vec![0],
        default_collation: None,
    };
    let runs = table(
        "public",
        "agent_runs",
        &[
            ("id", "bigint", SqlType::Int8),
            ("agent_id", "uuid", SqlType::Uuid),
            ("workspace_id", "uuid", SqlType::Uuid),
            ("user_id", "uuid", SqlType::Uuid),
            ("status", "text", SqlType::Text),
            (
                "started_at",
                "timestamp with time zone",
                SqlType::TimestampTz,
            ),
            ("runtime_seconds", "double precision", SqlType::Float8),
            ("credits_consumed", "numeric(12,4)", SqlType::Numeric),
            ("error_code", "text", SqlType::Text),
        ],
    );
    let activity = table(
        "analytics",
        "user_activity",
        &[
            ("id", "bigint", SqlType::Int8),
            ("workspace_id", "uuid", SqlType::Uuid),
            ("user_id", "uuid", SqlType::Uuid),
            ("activity_type", "text", SqlType::Text),
            (
                "created_at",
                "timestamp with time zone",
                SqlType::TimestampTz,
            ),
        ],
    );
    [runs, activity]
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

/// Splits SQL into tokens that join back with spaces: words, quoted strings and identifiers,
/// two-character operators, single punctuation.
fn tokens(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
        .collect();
    let chars: Vec<char> = code.join("\n").chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            out.push(chars[i..end].iter().collect());
            i = end;
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
            {
                j += 1;
            }
            out.push(chars[i..j].iter().collect());
            i = j;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["::", ">=", "<=", "<>", "!=", "||"].contains(&two.as_str()) {
                out.push(two);
                i += 2;
            } else {
                out.push(c.to_string());
                i += 1;
            }
        }
    }
    out
}

fn seed_texts() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/views");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("schema/views")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a seed view");
            (p, text)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Replace(Index, &'static str),
    Insert(Index, &'static str),
    /// The nth lowercase identifier (the seed views write keywords in capitals) replaced by
    /// an expression.
    Expr(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        1 => (any::<Index>(), select(POOL)).prop_map(|(a, t)| Mutation::Replace(a, t)),
        1 => (any::<Index>(), select(POOL)).prop_map(|(a, t)| Mutation::Insert(a, t)),
        6 => (any::<Index>(), select(EXPRS)).prop_map(|(a, t)| Mutation::Expr(a, t)),
    ]
}

fn mutate(mut toks: Vec<String>, muts: &[Mutation]) -> String {
    for m in muts {
        if toks.is_empty() {
            break;
        }
        let n = toks.len();
        match m {
            Mutation::Delete(i) => {
                toks.remove(i.index(n));
            }
            Mutation::Duplicate(i) => {
                let t = toks[i.index(n)].clone();
                toks.insert(i.index(n), t);
            }
            Mutation::Swap(a, b) => toks.swap(a.index(n), b.index(n)),
            Mutation::Replace(i, t) => toks[i.index(n)] = (*t).to_string(),
            Mutation::Insert(i, t) => toks.insert(i.index(n + 1), (*t).to_string()),
            Mutation::Expr(i, t) => {
                let idents: Vec<usize> = (0..n)
                    .filter(|&k| {
                        let tok = &toks[k];
                        tok.chars().any(|c| c.is_ascii_lowercase())
                            && tok
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    })
                    .collect();
                if !idents.is_empty() {
                    toks[idents[i.index(idents.len())]] = (*t).to_string();
                }
            }
        }
    }
    toks.join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn mutated_views_plan_or_fail_with_a_named_error(
        which in any::<Index>(),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let seeds = seed_texts();
        let (path, text) = &seeds[which.index(seeds.len())];
        let sql = mutate(tokens(text), &muts);
        let tz = PgTimeZone::parse("UTC").expect("UTC");
        let catalog = catalog();
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let outcome = std::panic::catch_unwind(|| {
            let file = parse_view_file(path, &sql).map_err(|e| e.to_string())?;
            let planned = BTreeMap::new();
            plan_view(&file, &catalog, &planned, &tz).map(drop).map_err(|e| e.to_string())
        });
        match outcome {
            Err(_) => prop_assert!(false, "the planner panicked on:\n{sql}"),
            Ok(Err(message)) => prop_assert!(
                message.contains(&file_name) && message.len() > file_name.len() + 10,
                "the error should name the file and say what is wrong: {message:?}\nfor:\n{sql}"
            ),
            Ok(Ok(())) => {}
        }
    }
}

#[test]
fn the_unmutated_seed_views_tokenize_and_plan() {
    let tz = PgTimeZone::parse("UTC").expect("UTC");
    for (path, text) in seed_texts() {
        let sql = tokens(&text).join(" ");
        let file = parse_view_file(&path, &sql)
            .unwrap_or_else(|e| panic!("{}: {e}\n{sql}", path.display()));
        plan_view(&file, &catalog(), &BTreeMap::new(), &tz)
            .unwrap_or_else(|e| panic!("{}: {e}\n{sql}", path.display()));
    }
}
