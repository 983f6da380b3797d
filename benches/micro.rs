//! Criterion micro-benchmarks of deltamv's hot paths, each measured in isolation on the crate's
//! public API with realistic `public.agent_runs` data (see `schema/sources.sql`).
//!
//! Every source change goes through the same per-change path, so these are where the engine's
//! time goes as write volume grows:
//!
//! 1. `pgoutput/*`: decoding the replication stream (MB/s). Every byte the slot sends passes
//!    through [`deltamv::source::pgoutput::decode`]; `decode` measures the wire decoder alone,
//!    `decode_and_parse` adds what `source::stream` does next for each tuple (parse the text
//!    value of every column as its SQL type with [`Value::parse_text`]). The payload is a stream
//!    of transactions as PostgreSQL sends them: one Relation message, then per transaction Begin,
//!    six Inserts, three Updates (REPLICA IDENTITY DEFAULT, key unchanged, so no old tuple), one
//!    Delete (key only) and Commit.
//! 2. `maintain/*`: state updates (changes/s). The [`Maintainer`] folds batches of 10,000 inserts,
//!    updates or deletes of agent_runs rows into the state of the five seed views
//!    (`schema/views/*.sql`, planned exactly as `setup::prepare` does) and commits the batch to a
//!    real RocksDB in a temporary directory, the per-batch work of the engine's apply loop minus
//!    the target write. The store is preloaded with 50,000 rows so reads hit existing groups. An
//!    iteration's timed part is `apply` + `commit`; setup that keeps the state size stable
//!    (inserting the rows a delete batch removes, removing the rows an insert batch added) is
//!    untimed.
//! 3. `multiset/*`: the counted multiset behind PERCENTILE_CONT, COUNT(DISTINCT), MIN and MAX
//!    ([`Multiset`]), with 1,000 and 100,000 distinct values: one update is an insert or a
//!    retraction of one value; queries are PERCENTILE_CONT(0.5) and (0.95). Every change to a
//!    row of a percentile view's group does one update and, per batch, one query per percentile.
//! 4. `sink/*`: the sink's batch upsert ([`TargetWriter::write`]) of 1,000 changed groups of
//!    `analytics.mv_agent_performance` into its target table, in one transaction, against a
//!    throwaway PostgreSQL cluster started by the test harness (`tests/support`). The cluster runs
//!    with `fsync = off` and `synchronous_commit = off`, so this is the CPU and round-trip cost of
//!    the two statements, not disk latency. Skipped with a message when no PostgreSQL server
//!    binaries are found.
//!
//! Run with `cargo bench --bench micro` (shorter: `-- --warm-up-time 1 --measurement-time 3`).
//! Times are read and folded in the server zone `DELTAMV_MICRO_ZONE` names (default `UTC`; a
//! zone with transitions, such as `America/New_York`, makes every timestamptz's local date a
//! search of the zone's table).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use deltamv::change::{Change, TargetChange};
use deltamv::maintain::Maintainer;
use deltamv::ops::Multiset;
use deltamv::pg::{Catalog, ColumnInfo, Lsn, QualifiedName, TableInfo};
use deltamv::pgtime::PgTimeZone;
use deltamv::plan::deps::dependency_order;
use deltamv::plan::parse::read_views_dir;
use deltamv::plan::{plan_view, ViewPlan};
use deltamv::sink::target::{ensure_target, TargetTable, TargetWriter};
use deltamv::source::pgoutput::{
    decode, encode, OldTuple, PgOutputMessage, Relation, RelationColumn, TupleColumn, TupleData,
};
use deltamv::state::store::{Durability, Store};
use deltamv::value::{SqlType, Value};

/// The engine's "now" for every benchmark: 2026-11-24 12:00:00 UTC, in microseconds since 1970.
const NOW_MICROS: i64 = 1_795_521_600_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
/// Rows in the state store before the `maintain` benchmarks start.
const PRELOAD_ROWS: usize = 50_000;
/// Changes per `maintain` batch.
const BATCH: usize = 10_000;
/// Changed groups per `sink` write.
const SINK_GROUPS: usize = 1_000;
const AGENT_RUNS_OID: u32 = 16_385;

// ----- data: agent_runs rows as PostgreSQL's text output -----

/// Column name, type OID, `atttypmod`, `format_type` and SQL type of `public.agent_runs`.
const AGENT_RUNS: [(&str, u32, i32, &str, SqlType); 9] = [
    ("id", 20, -1, "bigint", SqlType::Int8),
    ("agent_id", 2950, -1, "uuid", SqlType::Uuid),
    ("workspace_id", 2950, -1, "uuid", SqlType::Uuid),
    ("user_id", 2950, -1, "uuid", SqlType::Uuid),
    ("status", 25, -1, "text", SqlType::Text),
    (
        "started_at",
        1184,
        -1,
        "timestamp with time zone",
        SqlType::TimestampTz,
    ),
    (
        "runtime_seconds",
        701,
        -1,
        "double precision",
        SqlType::Float8,
    ),
    // numeric(12,4): typmod = (precision << 16 | scale) + 4
    (
        "credits_consumed",
        1700,
        (12 << 16 | 4) + 4,
        "numeric(12,4)",
        SqlType::Numeric,
    ),
    ("error_code", 25, -1, "text", SqlType::Text),
];

const USER_ACTIVITY: [(&str, &str, SqlType); 5] = [
    ("id", "bigint", SqlType::Int8),
    ("workspace_id", "uuid", SqlType::Uuid),
    ("user_id", "uuid", SqlType::Uuid),
    ("activity_type", "text", SqlType::Text),
    (
        "created_at",
        "timestamp with time zone",
        SqlType::TimestampTz,
    ),
];

const ERROR_CODES: [&str; 4] = ["timeout", "oom", "tool_error", "rate_limited"];

/// One agent_runs row: each column's text output, `None` for NULL.
type TextRow = Vec<Option<String>>;

/// A platform of 20 workspaces, 400 agents (each in one workspace) and 2,000 users, producing
/// runs started over the last 35 days (so some fall outside the views' 7- and 30-day windows).
struct Fleet {
    rng: SmallRng,
    agents: Vec<(String, String)>,
    users: Vec<String>,
}

impl Fleet {
    fn new(seed: u64) -> Fleet {
        let mut rng = SmallRng::seed_from_u64(seed);
        let workspaces: Vec<String> = (0..20).map(|_| support::workload::uuid(&mut rng)).collect();
        let agents = (0..400)
            .map(|i| {
                (
                    support::workload::uuid(&mut rng),
                    workspaces[i % workspaces.len()].clone(),
                )
            })
            .collect();
        let users = (0..2_000)
            .map(|_| support::workload::uuid(&mut rng))
            .collect();
        Fleet { rng, agents, users }
    }

    fn run(&mut self, id: i64) -> TextRow {
        let rng = &mut self.rng;
        let (agent, workspace) = self.agents[rng.gen_range(0..self.agents.len())].clone();
        let user = self.users[rng.gen_range(0..self.users.len())].clone();
        let status = match rng.gen_range(0..100) {
            0..70 => "completed",
            70..85 => "failed",
            85..95 => "running",
            _ => "cancelled",
        };
        let started = NOW_MICROS - rng.gen_range(0..35 * DAY_MICROS);
        let started = chrono::DateTime::from_timestamp_micros(started)
            .expect("timestamp in range")
            .format("%Y-%m-%d %H:%M:%S%.6f+00")
            .to_string();
        // extra_float_digits = 3: the shortest text that round-trips, as Rust's Display prints.
        let runtime = (status != "running").then(|| format!("{}", rng.gen_range(0.5..900.0f64)));
        let credits = (status != "running")
            .then(|| format!("{}.{:04}", rng.gen_range(0..50), rng.gen_range(0..10_000)));
        let error = (status == "failed" && rng.gen_bool(0.8))
            .then(|| ERROR_CODES[rng.gen_range(0..ERROR_CODES.len())].to_string());
        vec![
            Some(id.to_string()),
            Some(agent),
            Some(workspace),
            Some(user),
            Some(status.to_string()),
            Some(started),
            runtime,
            credits,
            error,
        ]
    }
}

fn zone() -> PgTimeZone {
    let name = std::env::var("DELTAMV_MICRO_ZONE").unwrap_or_else(|_| "UTC".into());
    PgTimeZone::parse(&name).unwrap_or_else(|e| panic!("DELTAMV_MICRO_ZONE={name}: {e}"))
}

/// A text row as the stream parses it (`source::stream`): one [`Value`] per column.
fn parse_row(row: &TextRow, tz: &PgTimeZone) -> Vec<Value> {
    row.iter()
        .zip(AGENT_RUNS)
        .map(|(text, (name, _, _, _, ty))| match text {
            None => Value::Null,
            Some(t) => Value::parse_text(t, ty, tz)
                .unwrap_or_else(|e| panic!("agent_runs.{name} = {t:?}: {e}")),
        })
        .collect()
}

// ----- 1. pgoutput decoding -----

fn tuple(row: &TextRow) -> TupleData {
    TupleData {
        columns: row
            .iter()
            .map(|c| match c {
                Some(t) => TupleColumn::Text(t.clone().into_bytes()),
                None => TupleColumn::Null,
            })
            .collect(),
    }
}

fn relation_message() -> PgOutputMessage {
    PgOutputMessage::Relation(Relation {
        id: AGENT_RUNS_OID,
        namespace: "public".into(),
        name: "agent_runs".into(),
        replica_identity: b'd',
        columns: AGENT_RUNS
            .iter()
            .map(|(name, oid, typmod, _, _)| RelationColumn {
                is_key: *name == "id",
                name: (*name).into(),
                type_oid: *oid,
                type_modifier: *typmod,
            })
            .collect(),
    })
}

/// `txns` transactions of 10 changes each, preceded by one Relation message, as payloads.
fn pgoutput_stream(txns: usize) -> Vec<Vec<u8>> {
    let mut fleet = Fleet::new(1);
    let mut out = vec![encode(&relation_message())];
    let mut lsn: u64 = 0x1_6B37_4800;
    let mut next_id = 1i64;
    for xid in 0..txns {
        let commit_time = NOW_MICROS - 946_684_800_000_000 + xid as i64 * 1_000;
        let mut msgs = vec![PgOutputMessage::Begin {
            final_lsn: lsn + 2_000,
            commit_time_micros: commit_time,
            xid: 1_000 + xid as u32,
        }];
        for _ in 0..6 {
            msgs.push(PgOutputMessage::Insert {
                relation_id: AGENT_RUNS_OID,
                new: tuple(&fleet.run(next_id)),
            });
            next_id += 1;
        }
        for _ in 0..3 {
            let id = fleet.rng.gen_range(1..next_id);
            msgs.push(PgOutputMessage::Update {
                relation_id: AGENT_RUNS_OID,
                old: None,
                new: tuple(&fleet.run(id)),
            });
        }
        let mut key = vec![TupleColumn::Null; AGENT_RUNS.len()];
        key[0] = TupleColumn::Text(fleet.rng.gen_range(1..next_id).to_string().into_bytes());
        msgs.push(PgOutputMessage::Delete {
            relation_id: AGENT_RUNS_OID,
            old: OldTuple::Key(TupleData { columns: key }),
        });
        msgs.push(PgOutputMessage::Commit {
            flags: 0,
            commit_lsn: lsn + 2_000,
            end_lsn: lsn + 2_048,
            commit_time_micros: commit_time,
        });
        lsn += 4_096;
        out.extend(msgs.iter().map(encode));
    }
    out
}

/// Parses every text column of a tuple as its agent_runs type, as `source::stream` does.
fn parse_tuple(t: &TupleData, types: &[SqlType], tz: &PgTimeZone) -> usize {
    let mut parsed = 0;
    for (col, ty) in t.columns.iter().zip(types) {
        if let TupleColumn::Text(bytes) = col {
            let text = std::str::from_utf8(bytes).expect("utf-8 value");
            black_box(Value::parse_text(text, *ty, tz).expect("valid value"));
            parsed += 1;
        }
    }
    parsed
}

fn bench_pgoutput(c: &mut Criterion) {
    let payloads = pgoutput_stream(1_000);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    for p in &payloads {
        assert_eq!(encode(&decode(p).expect("decodes")), *p, "round trip");
    }
    let types: Vec<SqlType> = AGENT_RUNS.iter().map(|c| c.4).collect();
    let tz = zone();
    let mut g = c.benchmark_group("pgoutput");
    g.throughput(Throughput::Bytes(bytes as u64));
    let label = format!("{}_msgs_{}_bytes", payloads.len(), bytes);
    g.bench_function(BenchmarkId::new("decode", &label), |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(decode(black_box(p)).expect("decodes"));
            }
        })
    });
    g.bench_function(BenchmarkId::new("decode_and_parse", &label), |b| {
        b.iter(|| {
            let mut values = 0;
            for p in &payloads {
                values += match decode(black_box(p)).expect("decodes") {
                    PgOutputMessage::Insert { new, .. } | PgOutputMessage::Update { new, .. } => {
                        parse_tuple(&new, &types, &tz)
                    }
                    PgOutputMessage::Delete { old, .. } => parse_tuple(old.tuple(), &types, &tz),
                    _ => 0,
                };
            }
            values
        })
    });
    g.finish();
}

// ----- 2. state updates -----

/// The two source tables as `control::load_tables` describes them.
fn catalog() -> Catalog {
    let agent_runs = TableInfo {
        name: QualifiedName::new("public", "agent_runs"),
        columns: AGENT_RUNS
            .iter()
            .map(|(name, _, _, type_name, ty)| ColumnInfo::plain(*name, *ty, *type_name))
            .collect(),
        key: vec![0],
        default_collation: None,
    };
    let user_activity = TableInfo {
        name: QualifiedName::new("analytics", "user_activity"),
        columns: USER_ACTIVITY
            .iter()
            .map(|(name, type_name, ty)| ColumnInfo::plain(*name, *ty, *type_name))
            .collect(),
        key: vec![0],
        default_collation: None,
    };
    [agent_runs, user_activity]
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

/// The seed views planned as `setup::prepare` plans them: in dependency order, then sorted by
/// name (positions are view ids in the store).
fn seed_plans(catalog: &Catalog, tz: &PgTimeZone) -> Vec<ViewPlan> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/views");
    let files = read_views_dir(&dir).expect("reading schema/views");
    let order = dependency_order(&files).expect("view dependency order");
    let mut planned: BTreeMap<QualifiedName, ViewPlan> = BTreeMap::new();
    for i in order {
        let plan = plan_view(&files[i], catalog, &planned, tz)
            .unwrap_or_else(|e| panic!("planning {}: {e}", files[i].name));
        planned.insert(plan.name.clone(), plan);
    }
    planned.into_values().collect()
}

fn today() -> i32 {
    (NOW_MICROS / DAY_MICROS) as i32
}

/// A Maintainer over a fresh RocksDB in a temporary directory, with `preload` rows loaded and
/// committed; also the table index of agent_runs.
fn maintainer(dir: &Path, preload: &[Vec<Value>]) -> (Maintainer, usize) {
    let tz = zone();
    let catalog = catalog();
    let plans = seed_plans(&catalog, &tz);
    let tables: Vec<TableInfo> = catalog.into_values().collect();
    let table = tables
        .iter()
        .position(|t| t.name.name == "agent_runs")
        .expect("agent_runs in the catalog");
    let store = Store::open(dir).expect("opening the state store");
    let mut m = Maintainer::new(store, tz, tables, plans, today());
    m.ensure_global_groups().expect("global groups");
    for chunk in preload.chunks(20_000) {
        m.load(table, chunk).expect("loading rows");
    }
    m.finish_load().expect("ingesting the loaded rows");
    m.commit(Lsn(1), &[], Durability::Unlogged)
        .expect("committing the preload");
    (m, table)
}

/// The maintain fixture: the Maintainer, its data generator and the live ids.
struct StateBench {
    m: Maintainer,
    table: usize,
    fleet: Fleet,
    tz: PgTimeZone,
    next_id: i64,
    lsn: u64,
}

impl StateBench {
    fn rows(&mut self, ids: impl Iterator<Item = i64>) -> Vec<Vec<Value>> {
        ids.map(|id| parse_row(&self.fleet.run(id), &self.tz))
            .collect()
    }

    fn fresh_ids(&mut self, n: usize) -> std::ops::Range<i64> {
        let start = self.next_id;
        self.next_id += n as i64;
        start..self.next_id
    }

    /// Applies and commits one batch; returns the time it took.
    fn run(&mut self, changes: Vec<Change>) -> Duration {
        self.lsn += 1;
        let t = Instant::now();
        let out = self.m.apply(&changes).expect("applying the batch");
        self.m
            .commit(Lsn(self.lsn), &[], Durability::Unlogged)
            .expect("committing the batch");
        let elapsed = t.elapsed();
        black_box(out);
        elapsed
    }

    fn inserts(&mut self, ids: std::ops::Range<i64>) -> Vec<Change> {
        let table = self.table;
        self.rows(ids)
            .into_iter()
            .map(|row| Change::Insert { table, row })
            .collect()
    }

    fn deletes(&self, ids: std::ops::Range<i64>) -> Vec<Change> {
        ids.map(|id| Change::Delete {
            table: self.table,
            key: vec![Value::Int(id)],
        })
        .collect()
    }
}

fn bench_maintain(c: &mut Criterion) {
    let dir = tempfile::TempDir::new().expect("temporary state directory");
    let tz = zone();
    let mut fleet = Fleet::new(2);
    let preload: Vec<Vec<Value>> = (1..=PRELOAD_ROWS as i64)
        .map(|id| parse_row(&fleet.run(id), &tz))
        .collect();
    let (m, table) = maintainer(dir.path(), &preload);
    drop(preload);
    let mut s = StateBench {
        m,
        table,
        fleet,
        tz,
        next_id: PRELOAD_ROWS as i64 + 1,
        lsn: 1,
    };

    let mut g = c.benchmark_group("maintain");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));
    let views = s.m.view_count();
    // The views fold on one thread, then on two (the scaling of the fold alone).
    for threads in [1, 2] {
        s.m.set_threads(threads);
        let label = format!("{BATCH}_changes_{views}_views_{threads}_threads");

        g.bench_function(BenchmarkId::new("insert", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ids = s.fresh_ids(BATCH);
                    let batch = s.inserts(ids.clone());
                    total += s.run(batch);
                    let undo = s.deletes(ids);
                    s.run(undo);
                }
                total
            })
        });

        g.bench_function(BenchmarkId::new("update", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Updates of preloaded rows: new status, times, runtime, credits, and (as the
                    // generator picks them) a new agent, user or day, so rows move between groups.
                    let ids: Vec<i64> = (0..BATCH)
                        .map(|_| s.fleet.rng.gen_range(1..=PRELOAD_ROWS as i64))
                        .collect();
                    let table = s.table;
                    let batch = s
                        .rows(ids.into_iter())
                        .into_iter()
                        .map(|row| Change::Update {
                            table,
                            old_key: None,
                            row,
                            unchanged: vec![],
                        })
                        .collect();
                    total += s.run(batch);
                }
                total
            })
        });

        g.bench_function(BenchmarkId::new("delete", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ids = s.fresh_ids(BATCH);
                    let setup = s.inserts(ids.clone());
                    s.run(setup);
                    let batch = s.deletes(ids);
                    total += s.run(batch);
                }
                total
            })
        });
    }
    g.finish();
}

// ----- 3. counted multiset -----

fn bench_multiset(c: &mut Criterion) {
    let mut g = c.benchmark_group("multiset");
    for distinct in [1_000usize, 100_000] {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut m = Multiset::default();
        let mut values = Vec::with_capacity(distinct);
        while m.distinct() < distinct as i64 {
            // Runtimes in seconds with millisecond resolution; about a third appear twice.
            let v = Value::Float((rng.gen_range(0..900_000_000u64) as f64) / 1_000.0);
            let copies = if rng.gen_bool(0.3) { 2 } else { 1 };
            m.apply(&v, copies);
            values.push(v);
        }
        // Probes: half values already present, half new ones.
        let probes: Vec<Value> = (0..1_024)
            .map(|i| {
                if i % 2 == 0 {
                    values[rng.gen_range(0..values.len())].clone()
                } else {
                    Value::Float(rng.gen_range(0.0..900_000.0f64))
                }
            })
            .collect();

        g.throughput(Throughput::Elements(2));
        g.bench_function(BenchmarkId::new("insert_retract", distinct), |b| {
            let mut i = 0;
            b.iter(|| {
                let v = &probes[i % probes.len()];
                i += 1;
                m.apply(black_box(v), 1);
                m.apply(black_box(v), -1);
            })
        });
        assert_eq!(m.distinct(), distinct as i64, "updates were undone");

        g.throughput(Throughput::Elements(1));
        for p in [0.5, 0.95] {
            g.bench_function(
                BenchmarkId::new(format!("percentile_cont_{p}"), distinct),
                |b| b.iter(|| black_box(m.percentile_cont(black_box(p)))),
            );
        }
    }
    g.finish();
}

// ----- 4. sink batch upsert -----

/// 1,000 changed groups of mv_agent_performance as the Maintainer produces them, and its plan.
fn agent_performance_changes() -> (ViewPlan, Vec<TargetChange>) {
    let dir = tempfile::TempDir::new().expect("temporary state directory");
    let tz = zone();
    let (mut m, table) = maintainer(dir.path(), &[]);
    let v = (0..m.view_count())
        .find(|v| m.plan(*v).name.name == "mv_agent_performance")
        .expect("mv_agent_performance is a seed view");
    let mut fleet = Fleet::new(4);
    let changes: Vec<Change> = (1..=20_000)
        .map(|id| Change::Insert {
            table,
            row: parse_row(&fleet.run(id), &tz),
        })
        .collect();
    let mut out = m.apply(&changes).expect("applying rows");
    let mut groups = std::mem::take(&mut out[v]);
    assert!(groups.len() >= SINK_GROUPS, "only {} groups", groups.len());
    groups.truncate(SINK_GROUPS);
    (m.plan(v).clone(), groups)
}

fn bench_sink(c: &mut Criterion) {
    let cluster = match support::PgCluster::start(support::ClusterOptions::default()) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("sink benchmarks skipped: cannot start a PostgreSQL cluster: {e:#}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (plan, changes) = agent_performance_changes();
    let url = cluster.create_database("bench").expect("creating database");
    let sources =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/sources.sql"))
            .expect("reading schema/sources.sql");
    let (mut client, writer) = rt.block_on(async {
        let mut client = support::connect(&url).await.expect("connecting");
        client
            .batch_execute(&sources)
            .await
            .expect("creating the source tables");
        let tx = client.transaction().await.expect("begin");
        let columns = ensure_target(&tx, &plan)
            .await
            .expect("creating the target");
        tx.commit().await.expect("commit");
        let writer = TargetWriter::prepare(&client, TargetTable::new(&plan, columns))
            .await
            .expect("preparing the target statements");
        (client, writer)
    });
    let mut write = move |changes: &[TargetChange]| {
        rt.block_on(async {
            let tx = client.transaction().await.expect("begin");
            writer.write(&tx, changes).await.expect("writing groups");
            tx.commit().await.expect("commit");
        })
    };
    // Steady state: the groups exist, so each write deletes 1,000 rows and inserts 1,000.
    write(&changes);

    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(SINK_GROUPS as u64));
    g.bench_function(
        BenchmarkId::new(
            "upsert",
            format!("{SINK_GROUPS}_groups_mv_agent_performance"),
        ),
        |b| b.iter(|| write(black_box(&changes))),
    );
    g.finish();
    drop(write);
    drop(cluster);
}

criterion_group!(
    benches,
    bench_pgoutput,
    bench_multiset,
    bench_maintain,
    bench_sink
);
criterion_main!(benches);
