//! The replication stream read ahead while the engine folds a batch: events read ahead are
//! handed out later exactly in stream order, a transaction's transactional messages after it
//! and a put-back event before them, and the read ahead stops where it is told to.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use deltamv::pg::{DbTarget, Lsn, QualifiedName};
use deltamv::pgtime::PgTimeZone;
use deltamv::source::control::load_tables;
use deltamv::source::stream::{SourceStream, Sources, StreamEvent};
use support::{ClusterOptions, PgCluster};

const SLOT: &str = "ahead";

/// What the test compares: a transaction's row count, or a message's content.
#[derive(Debug, PartialEq)]
enum Seen {
    Txn(usize),
    Message(String),
}

fn seen(e: StreamEvent) -> Option<Seen> {
    match e {
        StreamEvent::Transaction { changes, .. } => Some(Seen::Txn(changes.len())),
        StreamEvent::Message { content, .. } => {
            Some(Seen::Message(String::from_utf8_lossy(&content).into()))
        }
        StreamEvent::Idle { .. } | StreamEvent::Part { .. } => None,
    }
}

/// Reads ahead until `rows` changes wait (or fails after 20 s).
async fn read_ahead_to(stream: &mut SourceStream, rows: usize) -> Result<()> {
    let start = Instant::now();
    while stream.ahead() < rows {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("only {} of {rows} changes read ahead", stream.ahead());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read_ahead()).await;
    }
    Ok(())
}

/// The next `n` events that are transactions or messages.
async fn next_seen(stream: &mut SourceStream, n: usize) -> Result<Vec<Seen>> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next()).await??;
        out.extend(seen(e));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_ahead_come_out_in_stream_order() -> Result<()> {
    let cluster = PgCluster::start(ClusterOptions::default())?;
    let client = cluster.connect("postgres").await?;
    client
        .batch_execute(
            "CREATE TABLE public.t (id int PRIMARY KEY, v int);
             CREATE PUBLICATION ahead FOR TABLE public.t;",
        )
        .await?;
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&SLOT],
        )
        .await?;
    // A transaction with a transactional message, one without, a message outside any
    // transaction, and two more transactions: each statement its own transaction.
    for sql in [
        "BEGIN;
         INSERT INTO public.t SELECT g, g FROM generate_series(1, 3) g;
         SELECT pg_logical_emit_message(true, 'deltamv.test', 'after the first');
         COMMIT;",
        "INSERT INTO public.t SELECT g, g FROM generate_series(4, 5) g",
        "SELECT pg_logical_emit_message(false, 'deltamv.test', 'between')",
        "INSERT INTO public.t VALUES (6, 6)",
        "UPDATE public.t SET v = 0 WHERE id <= 4",
    ] {
        client.batch_execute(sql).await?;
    }
    let name = QualifiedName::new("public", "t");
    let tables = load_tables(&client, std::slice::from_ref(&name)).await?;
    let referenced = vec![vec![true; tables[0].columns.len()]];
    let sources = Sources {
        tables,
        referenced,
        published: vec![name],
    };
    let db = DbTarget::parse(&cluster.url("postgres"))?;
    let utc = PgTimeZone::parse("UTC")?;
    let mut stream = SourceStream::start(&db, SLOT, "ahead", Lsn::ZERO, sources, utc, 64).await?;

    // The first transaction read ahead, with its message queued after it.
    read_ahead_to(&mut stream, 3).await?;
    assert_eq!(
        stream.ahead(),
        3,
        "reading ahead stops once it is far enough"
    );
    let first = next_seen(&mut stream, 1).await?;
    assert_eq!(first, vec![Seen::Txn(3)]);
    assert_eq!(stream.ahead(), 0, "handed out, the changes no longer count");
    // Everything else read ahead, one event put back in front of it.
    let message = next_seen(&mut stream, 1).await?;
    assert_eq!(message, vec![Seen::Message("after the first".into())]);
    read_ahead_to(&mut stream, 2 + 1 + 4).await?;
    let mut again = Vec::new();
    while again.is_empty() {
        let e = stream.next().await?;
        if matches!(e, StreamEvent::Transaction { .. }) {
            again.push(e);
        }
    }
    stream.put_back(again);
    assert_eq!(
        stream.ahead(),
        2 + 1 + 4,
        "a put-back event counts as waiting"
    );
    let rest = next_seen(&mut stream, 4).await?;
    assert_eq!(
        rest,
        vec![
            Seen::Txn(2),
            Seen::Message("between".into()),
            Seen::Txn(1),
            Seen::Txn(4),
        ],
        "in the order they were written"
    );
    assert_eq!(stream.ahead(), 0);
    stream.shutdown().await;
    Ok(())
}
