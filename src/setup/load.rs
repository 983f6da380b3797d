//! The initial load: a fresh snapshot of the source tables folded into the state store, the
//! targets filled from it in one transaction at the slot's consistent LSN, and the state marked
//! complete last.
//!
//! Its own room because it is the one long-running, crash-sensitive part of `init`: a crash
//! anywhere in it makes the next `init`/`run` start the snapshot over (the state says "snapshot
//! not done" durably before its unlogged chunks, and "done" only after they are flushed and the
//! targets committed). It loads what it is given: which views and tables, and whether to load
//! at all, were decided before (`prepare`, [`super::trust`]); the objects it fills were created
//! by [`super::objects`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::objects::{apply_row_security, count_unknown_rows, record_broken};
use super::{Prepared, SetupError};
use crate::bookkeeping::history::{self, RefreshKind};
use crate::bookkeeping::{progress, views};
use crate::config::Config;
use crate::maintain::{Maintainer, RowPages, TableStats};
use crate::pg::{describe, sql_err, Lsn, TableInfo};
use crate::sink::fill::{Fill, Filled, Held, Plan};
use crate::sink::target::TargetTable;
use crate::source::control;
use crate::source::snapshot::{begin_in_snapshot, SlotSnapshot, SnapshotError, TableCopy};
use crate::state::meta;
use crate::state::store::{Durability, Store, StoreError};
use crate::state::StateThread;

/// Rows per state batch while loading the snapshot.
const SNAPSHOT_CHUNK_ROWS: usize = 20_000;

/// Loads a fresh snapshot into the emptied `store` and fills `targets` (created and empty) from
/// it; returns the running state, the targets and the snapshot's LSN. `started` is when `init`
/// began initializing (the refresh history's start).
pub(super) async fn initial_load(
    p: &mut Prepared,
    cfg: &Config,
    mut store: Store,
    today: i32,
    targets: Vec<TargetTable>,
    started: Instant,
) -> Result<(StateThread<Maintainer>, Vec<TargetTable>, Lsn), SetupError> {
    control::drop_slot(&p.client, &cfg.slot).await?;
    store.wipe()?;
    let snapshot = SlotSnapshot::create(&p.db, &cfg.slot, &cfg.publication).await?;
    let lsn = snapshot.consistent_lsn;
    let mut maintainer = Maintainer::new(store, p.tz, p.tables.clone(), p.plans.clone(), today);
    maintainer.set_threads(cfg.fold_threads);
    let state = StateThread::spawn(maintainer);
    load_snapshot(p, &state, &snapshot).await?;
    drop(snapshot);
    state
        .call(|m| {
            m.forget_hot_groups();
            m.ensure_global_groups().map(drop)
        })
        .await??;
    // The targets read groups only: they fill while the last table's row images are still
    // being merged into table files, on the other core.
    let total = fill_targets(p, cfg, &state, &targets, lsn, today, started).await?;
    crate::failpoint::hit("snapshot_targets_filled");
    state
        .call(|m| -> Result<(), SetupError> {
            let rows = m.finish_load()?;
            tracing::info!(rows, "row images ingested");
            crate::failpoint::hit("snapshot_ingested");
            Ok(())
        })
        .await??;
    let fingerprint = p.fingerprint.clone();
    let (state_bytes, reader_bytes) = state
        .call(move |m| {
            // The snapshot's chunks were written without RocksDB's log: make them durable
            // before the load is marked done.
            m.store().flush()?;
            m.commit(
                lsn,
                &[meta::fingerprint(&fingerprint), meta::snapshot_done(true)],
                Durability::Synced,
            )?;
            let store = m.store();
            Ok::<_, StoreError>((store.size_bytes(), store.table_reader_bytes()))
        })
        .await??;
    apply_row_security(p).await?;
    // Fallback views reading incremental targets were created while those were empty.
    for fb in &p.fallbacks {
        if let Err(e) = crate::refresher::refresh_now(&p.client, fb).await {
            tracing::warn!(view = %fb.name, error = %e, "first refresh of a fallback view failed; the engine retries");
        }
    }
    count_unknown_rows(&p.client).await?;
    tracing::info!(
        lsn = %lsn,
        rows = total,
        state_mb = state_bytes >> 20,
        table_readers_mb = reader_bytes >> 20,
        "initial load complete"
    );
    Ok((state, targets, lsn))
}

/// Writes every target from the loaded state, records row counts, history, progress (at `lsn`,
/// evaluated at `today`) and the views' state, all in one transaction (readers see the old rows
/// until it commits); returns the rows the targets hold.
///
/// A resync holds a target's rows to compare them ([`Fill`]): reading them took as long as
/// writing the target by difference (1.3 of `mv_agent_performance`'s 3.3 s at 5M + 5M). So
/// every target is locked first, and the next held target's rows are read on a connection of
/// their own while this one fills; the first held target's are read in its fill.
async fn fill_targets(
    p: &mut Prepared,
    cfg: &Config,
    state: &StateThread<Maintainer>,
    targets: &[TargetTable],
    lsn: Lsn,
    today: i32,
    started: Instant,
) -> Result<usize, SetupError> {
    let tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("loading targets"))?;
    let mut plans = Vec::with_capacity(targets.len());
    for t in targets {
        let plan = Fill::lock(&tx, t, cfg.resync_memory_mb << 20).await;
        plans.push(plan.map_err(sql_err(format!("locking {}", t.plan_name)))?);
    }
    let mut reader = if plans.contains(&Plan::Held) {
        Some(p.db.connect().await?)
    } else {
        None
    };
    let read_tx = match reader.as_mut() {
        Some(c) => Some(c.transaction().await.map_err(sql_err("reading targets"))?),
        None => None,
    };
    let mut ahead: Option<Held> = None;
    let mut total = 0;
    for (v, t) in targets.iter().enumerate() {
        let begun = Instant::now();
        let fill = Fill::begin(&tx, t, plans[v].clone(), ahead.take()).await;
        let fill = fill.map_err(sql_err(format!("loading {}", t.plan_name)))?;
        let begin_ms = begun.elapsed().as_millis();
        let next_held = (v + 1..targets.len()).find(|&w| plans[w] == Plan::Held);
        let read_ahead = async {
            match (next_held, &read_tx) {
                (Some(w), Some(rtx)) => Fill::read_held(rtx, &targets[w]).await.map(Some),
                _ => Ok(None),
            }
        };
        let written = write_target(&tx, state, v, fill, &t.plan_name);
        let (filled, read) = tokio::join!(written, read_ahead);
        let (filled, paging, writing, finishing) = filled?;
        ahead = read.map_err(sql_err("reading targets"))?;
        total += filled.rows;
        tracing::info!(
            view = %t.plan_name,
            rows = filled.rows,
            changed = filled.changed,
            begin_ms,
            pages_ms = paging.as_millis(),
            write_ms = writing.as_millis(),
            finish_ms = finishing.as_millis(),
            "target filled"
        );
        views::record_rows(&tx, &t.plan_name, filled.rows as i64)
            .await
            .map_err(sql_err("recording row counts"))?;
        history::record(
            &tx,
            &t.plan_name,
            RefreshKind::InitialLoad,
            started,
            history::Counts::changed(filled.changed as i64),
            None,
        )
        .await
        .map_err(sql_err("recording refresh history"))?;
    }
    progress::record_progress(&tx, &cfg.slot, lsn, today, None)
        .await
        .map_err(sql_err("recording progress"))?;
    views::all_loaded(&tx).await?;
    // In the same transaction: no reader sees a view that no longer plans as 'ok'.
    record_broken(&tx, &p.broken).await?;
    tx.commit()
        .await
        .map_err(sql_err("committing the initial load"))?;
    Ok(total)
}

/// Writes view `v`'s rows from the state through `fill`, a page of groups at a time (memory
/// stays flat however large the view), the next page read out of the state while PostgreSQL
/// takes in this one; returns what it left, and the time spent reading pages, writing them
/// and finishing.
async fn write_target(
    tx: &tokio_postgres::Transaction<'_>,
    state: &StateThread<Maintainer>,
    v: usize,
    mut fill: Fill<'_>,
    name: &str,
) -> Result<(Filled, Duration, Duration, Duration), SetupError> {
    let load_err = || sql_err(format!("loading {name}"));
    let mut pages = RowPages::of(v);
    let (mut paging, mut writing) = (Duration::ZERO, Duration::ZERO);
    let (mut page, took) = timed(pages.next(state)).await;
    paging += took;
    while let Some(rows) = page? {
        let ((copied, wrote), (next, took)) =
            tokio::join!(timed(fill.rows(tx, &rows)), timed(pages.next(state)));
        copied.map_err(load_err())?;
        (writing, paging) = (writing + wrote, paging + took);
        page = next;
    }
    let (filled, finishing) = timed(fill.finish(tx)).await;
    Ok((filled.map_err(load_err())?, paging, writing, finishing))
}

/// `f`'s output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Folds every source table's rows, read in the slot's exported snapshot, into the state, chunk
/// by chunk (unlogged: [`initial_load`] flushes before it marks the snapshot done). The last
/// table's row images may still be merging into table files when it returns: `finish_load`
/// waits for them and ingests every table's.
async fn load_snapshot(
    p: &Prepared,
    state: &StateThread<Maintainer>,
    snapshot: &SlotSnapshot,
) -> Result<(), SetupError> {
    // Durably "not done" before the unlogged chunks (whatever an earlier state said).
    state
        .call(|m| -> Result<(), SetupError> {
            m.store()
                .commit(&[meta::snapshot_done(false)], Durability::Synced)?;
            m.begin_load()?;
            Ok(())
        })
        .await??;
    // Two readers in the snapshot: while one table is folded, PostgreSQL reads (and sorts) the
    // next on the other connection, instead of the engine waiting for its first row.
    let mut readers = Vec::new();
    for _ in 0..p.tables.len().min(2) {
        let reader = p.db.connect().await?;
        begin_in_snapshot(&reader, &snapshot.snapshot_name).await?;
        readers.push(reader);
    }
    let mut stats = Vec::with_capacity(p.tables.len());
    for table in &p.tables {
        stats.push(table_stats(&p.client, table).await);
    }
    let sizes = stats.clone();
    let columns = state
        .call(move |m| {
            (0..m.table_count())
                .map(|t| {
                    let order = m.load_order(t, &sizes[t], SNAPSHOT_CHUNK_ROWS as f64);
                    (m.referenced(t).to_vec(), order)
                })
                .collect::<Vec<_>>()
        })
        .await?;
    let start = |t: usize| {
        let (referenced, order) = &columns[t];
        TableCopy::start(&readers[t % 2], &p.tables[t], referenced, order)
    };
    let mut copy = if p.tables.is_empty() {
        None
    } else {
        Some(start(0).await?)
    };
    for (t, size) in stats.iter().enumerate() {
        let Some(current) = copy.take() else { break };
        let next = async {
            if t + 1 < p.tables.len() {
                start(t + 1).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (loaded, next) = tokio::join!(load_table(p, state, t, current, size.rows), next);
        loaded?;
        // Its table files are written while the next table loads.
        state.call(|m| m.finish_table()).await?;
        copy = next?;
    }
    for reader in &readers {
        reader
            .batch_execute("COMMIT")
            .await
            .map_err(|e| SnapshotError::Copy {
                table: "(snapshot)".into(),
                detail: describe(&e),
            })?;
    }
    Ok(())
}

/// `table`'s rows and its columns' distinct values as ANALYZE last estimated them (for the
/// order of its snapshot and the ETA on the terminal); unknown where it never ran. Of a
/// partitioned or inherited table, the estimates over its whole tree.
async fn table_stats(client: &Client, table: &TableInfo) -> TableStats {
    let rows: f64 = client
        .query_one(
            "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = $1::text::regclass",
            &[&table.name.quoted()],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0.0);
    // `inherited` rows last: they win where both exist.
    let estimates: HashMap<String, f64> = client
        .query(
            "SELECT attname::text, n_distinct::float8 FROM pg_stats
              WHERE schemaname = $1 AND tablename = $2 ORDER BY inherited",
            &[&table.name.schema, &table.name.name],
        )
        .await
        .map(|found| found.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default();
    // n_distinct: a count when positive, minus a fraction of the rows when negative.
    let distinct = (table.columns.iter())
        .map(|c| match estimates.get(&c.name).copied() {
            Some(n) if n > 0.0 => Some(n),
            Some(n) if n < 0.0 && rows > 0.0 => Some(-n * rows),
            _ => None,
        })
        .collect();
    TableStats { rows, distinct }
}

/// Folds one table's rows from `copy` into the state, chunk by chunk, with progress (rows, rate,
/// ETA from the planner's `estimate` of its rows) on the terminal.
async fn load_table(
    p: &Prepared,
    state: &StateThread<Maintainer>,
    t: usize,
    mut copy: TableCopy<'_>,
    estimate: f64,
) -> Result<(), SetupError> {
    let table = &p.tables[t];
    let mut loaded = 0usize;
    let started = std::time::Instant::now();
    // Two stages in flight: the state thread folds one chunk while this task reads and parses
    // the next from COPY (on two cores, the load takes the longer of the two, not their sum).
    let mut next = copy.next_chunk(SNAPSHOT_CHUNK_ROWS).await?;
    while let Some(chunk) = next {
        loaded += chunk.len();
        let apply = state.call(move |m| -> Result<(), SetupError> {
            m.load(t, &chunk)?;
            m.store()
                .commit(&[meta::snapshot_done(false)], Durability::Unlogged)?;
            crate::failpoint::hit("snapshot_chunk");
            Ok(())
        });
        let (applied, read) = tokio::join!(apply, copy.next_chunk(SNAPSHOT_CHUNK_ROWS));
        applied??;
        next = read?;
        let rate = loaded as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let eta_s = ((estimate - loaded as f64).max(0.0) / rate).round();
        tracing::info!(table = %table.name, rows = loaded, rows_per_s = rate.round(), eta_s, "snapshot progress");
    }
    Ok(())
}

/// Views recorded as failed stay failed across restarts until the next `init`.
pub async fn load_failures(client: &Client, m: &mut Maintainer) -> Result<(), SetupError> {
    for (name, why) in views::failed(client).await? {
        if let Some(v) = (0..m.view_count()).find(|v| m.plan(*v).name.to_string() == name) {
            m.set_failed(v, why);
        }
    }
    Ok(())
}
