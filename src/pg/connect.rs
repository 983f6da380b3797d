//! Connecting to PostgreSQL from a database URL, with TLS as [`super::tls`] reads it, and a
//! failed connection explained with what to fix (the password, pg_hba.conf, the database name,
//! or whether the server listens at all).

use std::str::FromStr;

use thiserror::Error;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg::error::describe;
use crate::pg::tls::{client_config, split_tls, Tls, TlsError};

/// How long a connection attempt may take (unless the URL sets connect_timeout).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("invalid database URL: {0} (expected postgresql://user:password@host:port/dbname)")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to PostgreSQL at {target}: {detail}")]
    Refused { target: String, detail: String },
}

/// Connection parameters parsed once from the database URL.
#[derive(Clone)]
pub struct DbTarget {
    pub url: String,
    pub config: tokio_postgres::Config,
    /// From the URL's `sslmode` and `sslrootcert` (see [`crate::pg::tls`]).
    pub tls: Tls,
    connector: Option<MakeRustlsConnect>,
}

impl DbTarget {
    pub fn parse(url: &str) -> Result<DbTarget, ConnectError> {
        let (rest, tls) = split_tls(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| ConnectError::Url(e.to_string()))?;
        let connector = match &tls {
            Tls::Plain => None,
            Tls::VerifyFull { root } => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(root)?))
            }
        };
        // An unreachable host (packets dropped) would otherwise hang until the OS gives up.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(DbTarget {
            url: url.to_string(),
            config,
            tls,
            connector,
        })
    }

    /// A failed connection's cause with what to do about it.
    fn diagnose(&self, e: &tokio_postgres::Error) -> String {
        let user = self.config.get_user().unwrap_or("(default user)");
        let db = self.config.get_dbname().unwrap_or(user);
        let hint = match e.as_db_error().map(|d| d.code().code()) {
            Some("28P01") => format!(
                "wrong password for user {user}: fix the password in DATABASE_URL"
            ),
            Some("28000") => format!(
                "the server refuses user {user} from this host: check the user name, and that pg_hba.conf allows it"
            ),
            Some("3D000") => format!(
                "database {db} does not exist: create it, or fix the database name in DATABASE_URL"
            ),
            Some("53300") => "the server has no free connection slots: raise max_connections or close idle sessions".into(),
            Some(_) => String::new(),
            None => "is PostgreSQL running and accepting TCP connections there? Check the host and port in DATABASE_URL and the server's listen_addresses".into(),
        };
        if hint.is_empty() {
            describe(e)
        } else {
            format!("{} ({hint})", describe(e))
        }
    }

    /// Host and port for messages (never the password).
    pub fn display(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}/{}", self.config.get_dbname().unwrap_or(""))
    }

    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let err = |e: tokio_postgres::Error| ConnectError::Refused {
            target: self.display(),
            detail: self.diagnose(&e),
        };
        let closed = |e: tokio_postgres::Error| tracing::debug!(error = %e, "connection closed");
        match &self.connector {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(err)?;
                tokio::spawn(async move { conn.await.unwrap_or_else(closed) });
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(err)?;
                tokio::spawn(async move { conn.await.unwrap_or_else(closed) });
                Ok(client)
            }
        }
    }
}
