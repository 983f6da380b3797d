//! The initial snapshot is read in COPY's binary format, the stream in text: a value must come
//! out the same both ways, or a row loaded by `init` would not match the same row's later
//! update. A table with a column of every type the engine reads (domains and an enum
//! included), filled with edge values and random ones by PostgreSQL itself, is read through
//! [`TableCopy`] and through COPY's text format parsed as the stream parses it; every value must
//! be identical (floats to the bit, numerics to the display scale).

mod support;

use anyhow::{ensure, Context, Result};
use deltamv::pg::QualifiedName;
use deltamv::pgtime::PgTimeZone;
use deltamv::source::control::load_tables;
use deltamv::source::snapshot::TableCopy;
use deltamv::value::{identical, split_copy_line, Value};
use futures_util::StreamExt;
use support::{ClusterOptions, PgCluster};

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN money4 AS numeric(12,4) CHECK (VALUE > -1e7);
CREATE DOMAIN label AS text;
CREATE TABLE every_type (
    id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, r real, f float8, n numeric,
    m money4, t text, v varchar(20), c char(5), e mood, l label, u uuid, d date,
    ts timestamp, tz timestamptz, iv interval
);
INSERT INTO every_type VALUES
 (1, true, -32768, 2147483647, 'NaN', 'NaN', 'NaN', 0, '', '', '', 'sad', '', '00000000-0000-0000-0000-000000000000',
  'infinity', 'infinity', 'infinity', '0'),
 (2, false, 32767, -2147483648, 'Infinity', '-Infinity', 'Infinity', -9999999.9999, E'tab\\there', E'new\\nline',
  'a', 'happy', E'back\\\\slash', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '-infinity', '-infinity', '-infinity',
  '-178000000 years'),
 (3, NULL, NULL, NULL, '-0', '-0', '-Infinity', NULL, 'ünïcødé ✓', NULL, 'abcde', NULL, NULL, NULL,
  '0044-03-15 BC', '0044-03-15 12:00 BC', '1900-01-01 00:00:00.000001+00', '1 year -2 mons 3 days -04:05:06.789'),
 (4, NULL, 0, 0, 1.17549435e-38, 2.2250738585072014e-308, '0.000000000000000000000000000001', 0.0001, 'x', 'y',
  NULL, 'ok', NULL, NULL, '2000-01-01', '2000-01-01', '2026-03-08 08:00:00+00', '-1 day'),
 (5, true, 1, -1, 3.4028235e38, 1.7976931348623157e308, '-123456789012345678901234567890.123456789', 12.3,
  NULL, NULL, ' pad ', NULL, NULL, NULL, '1999-12-31', '1999-12-31 23:59:59.999999', '2026-11-01 06:59:59.999999+00',
  '1000000 days');
-- NaN with its sign bit set: printed as NaN, sent with the bit.
INSERT INTO every_type (id, r, f) VALUES (6, -('NaN'::real), -('NaN'::float8));
INSERT INTO every_type
SELECT 100 + g, random() < 0.5, (random() * 60000 - 30000)::int2, (random() * 4e9 - 2e9)::int4,
       (random() * 1e6 - 5e5)::real, random() * 1e12 - 5e11,
       round((random() * 1e9 - 5e8)::numeric, (g % 12)), round((random() * 1e6)::numeric, 4),
       md5(g::text), left(md5(g::text), g % 20), left(md5(g::text), g % 6),
       (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, md5((g * 7)::text),
       md5(g::text)::uuid, date '2000-01-01' + (random() * 40000 - 20000)::int,
       timestamp '2000-01-01' + random() * interval '30000 days' - interval '15000 days',
       timestamptz '2026-03-08 00:00+00' + random() * interval '300 days',
       make_interval(months => g % 50 - 25, days => g % 70 - 35, secs => random() * 1e6 - 5e5)
  FROM generate_series(1, 3000) g;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_snapshot_values_equal_the_text_streams() -> Result<()> {
    let cluster = PgCluster::start(ClusterOptions::default().timezone("America/Chicago"))?;
    cluster.psql("postgres", "SELECT setseed(0.5);")?;
    cluster.psql("postgres", SCHEMA)?;
    let client = cluster.connect("postgres").await?;
    let name = QualifiedName::new("public", "every_type");
    let tables = load_tables(&client, std::slice::from_ref(&name)).await?;
    let table = &tables[0];
    ensure!(
        table.columns.iter().all(|c| c.ty.is_some()),
        "every column has a type the engine reads"
    );
    let all = vec![true; table.columns.len()];
    client
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL datestyle = ISO;
             SET LOCAL timezone = 'UTC'; SET LOCAL intervalstyle = postgres;
             SET LOCAL extra_float_digits = 3;",
        )
        .await?;
    let mut copy = TableCopy::start(&client, table, &all, &[0]).await?;
    let mut binary = Vec::new();
    while let Some(rows) = copy.next_chunk(1000).await? {
        binary.extend(rows);
    }
    let stream = client
        .copy_out("COPY (SELECT * FROM every_type ORDER BY id) TO STDOUT")
        .await?;
    let mut bytes = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    let text = String::from_utf8(bytes)?;
    let mut rows = 0;
    for (line, got) in text.lines().zip(&binary) {
        let want: Vec<Value> = split_copy_line(line)
            .into_iter()
            .zip(&table.columns)
            .map(|(field, col)| match (field, col.ty) {
                (Some(t), Some(ty)) => Value::parse_text(&t, ty, &PgTimeZone::UTC)
                    .with_context(|| format!("column {}", col.name)),
                _ => Ok(Value::Null),
            })
            .collect::<Result<_>>()?;
        for ((w, g), col) in want.iter().zip(got).zip(&table.columns) {
            // Floats to the bit: a row image is stored and consolidated by its bytes.
            let same_bits = match (w, g) {
                (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
                _ => true,
            };
            ensure!(
                identical(std::slice::from_ref(w), std::slice::from_ref(g)) && same_bits,
                "row {line:?}, column {}: text reads {w:?}, binary {g:?}",
                col.name
            );
        }
        rows += 1;
    }
    ensure!(
        rows == 3006 && binary.len() == 3006,
        "{rows} rows compared of {}",
        binary.len()
    );
    client.batch_execute("COMMIT").await?;
    Ok(())
}
