//! Privileges for the roles of `schema/roles.sql` on what the engine creates.
//!
//! Readers (`analytics_reader`) must see the targets and fallback views whichever role runs the
//! engine. Default privileges (`ALTER DEFAULT PRIVILEGES FOR ROLE deltamv_worker`) only cover
//! objects that `deltamv_worker` creates, and most first runs use the database owner or a
//! superuser: so the engine grants explicitly, on every `init` and start, what the reader lacks.
//! Where the role does not exist nothing is granted (deltamv runs without `roles.sql`); where the
//! engine's role may not grant (it neither owns the object nor holds the grant option), it warns
//! with the statement an administrator can run, instead of failing the start. The bookkeeping
//! objects (`deltamv.view_status` and the request functions) are granted by their DDL
//! ([`crate::source::control::BOOKKEEPING_DDL`]), which the engine's role always owns.

use tokio_postgres::GenericClient;

use crate::pg::sql_err;
use crate::pg::{quote_ident, QualifiedName};
use crate::source::control::ControlError;

/// The role that reads the summaries (dashboards, BI tools).
pub const READER_ROLE: &str = "analytics_reader";

/// What the reader role lacks on one relation, and whether this session may grant it.
struct Missing {
    schema_usage: bool,
    may_grant_usage: bool,
    select: bool,
    may_grant_select: bool,
}

/// Grants `SELECT` on `relations` (and `USAGE` on their schemas) to [`READER_ROLE`] where it
/// lacks them; a no-op when the role does not exist. Runs in the caller's transaction, so a
/// target created in it becomes readable when it commits.
pub async fn grant_readers<C: GenericClient>(
    client: &C,
    relations: &[&QualifiedName],
) -> Result<(), ControlError> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
            &[&READER_ROLE],
        )
        .await
        .map_err(sql_err("looking up the reader role"))?
        .get(0);
    if !exists {
        return Ok(());
    }
    let role = quote_ident(READER_ROLE);
    for rel in relations {
        let Some(m) = missing(client, rel).await? else {
            continue; // not created (a view that failed before its target existed)
        };
        if m.schema_usage {
            let sql = format!(
                "GRANT USAGE ON SCHEMA {} TO {role}",
                quote_ident(&rel.schema)
            );
            grant_or_warn(client, rel, &sql, m.may_grant_usage).await?;
        }
        if m.select {
            let sql = format!("GRANT SELECT ON {} TO {role}", rel.quoted());
            grant_or_warn(client, rel, &sql, m.may_grant_select).await?;
        }
    }
    Ok(())
}

async fn missing<C: GenericClient>(
    client: &C,
    rel: &QualifiedName,
) -> Result<Option<Missing>, ControlError> {
    let row = client
        .query_opt(
            "SELECT NOT has_schema_privilege($3::name, n.oid, 'USAGE'),
                    has_schema_privilege(n.oid, 'USAGE WITH GRANT OPTION'),
                    NOT has_table_privilege($3::name, c.oid, 'SELECT'),
                    has_table_privilege(c.oid, 'SELECT WITH GRANT OPTION')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&rel.schema, &rel.name, &READER_ROLE],
        )
        .await
        .map_err(sql_err(format!("reading the privileges on {rel}")))?;
    Ok(row.map(|r| Missing {
        schema_usage: r.get(0),
        may_grant_usage: r.get(1),
        select: r.get(2),
        may_grant_select: r.get(3),
    }))
}

async fn grant_or_warn<C: GenericClient>(
    client: &C,
    rel: &QualifiedName,
    sql: &str,
    may: bool,
) -> Result<(), ControlError> {
    if may {
        client
            .batch_execute(sql)
            .await
            .map_err(sql_err(format!("granting readers access to {rel}: {sql}")))?;
        Ok(())
    } else {
        tracing::warn!(view = %rel, role = READER_ROLE, fix = %sql, "readers cannot read this view and deltamv's role may not grant it: an administrator can run the statement in `fix`");
        Ok(())
    }
}
