//! TLS for both kinds of connection (SQL through tokio-postgres, replication through
//! pgwire-replication), from the connection string's `sslmode` and `sslrootcert` as libpq reads
//! them. tokio-postgres knows only disable/prefer/require and nothing of a root certificate, so
//! these two settings are taken out of the string here and applied to both clients.
//!
//! Only `verify-full` encrypts: the server's certificate must chain to the given CA and name the
//! host connected to. `require` and `verify-ca` are refused rather than honoured halfway (they
//! would not check who answers, which is what a password sent over TLS needs). `disable`,
//! `allow` and `prefer` (libpq's default) connect without TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    Plain,
    /// Verify the server's certificate against `root` (a PEM file) and the host name.
    VerifyFull {
        root: PathBuf,
    },
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("sslmode={0} does not check who answers and is not supported: use sslmode=verify-full&sslrootcert=<the CA certificate file (PEM)>")]
    Unverified(String),
    #[error("sslmode={0} is not a TLS mode: use disable, prefer or verify-full")]
    BadMode(String),
    #[error("sslmode=verify-full needs sslrootcert=<the CA certificate file (PEM) that signed the server's certificate>")]
    NoRoot,
    #[error("sslrootcert {path}: {detail}")]
    Root { path: String, detail: String },
}

/// Splits the TLS settings off a connection string (URL or `key=value` form); returns the rest,
/// for tokio-postgres, and the TLS to use.
pub fn split_tls(conn: &str) -> Result<(String, Tls), TlsError> {
    let mut mode: Option<String> = None;
    let mut root: Option<String> = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        !take(k, &percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => conn.to_string(),
        }
    } else {
        conn.split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k.trim(), v.trim())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => Tls::Plain,
        Some("verify-full") => Tls::VerifyFull {
            root: root.map(PathBuf::from).ok_or(TlsError::NoRoot)?,
        },
        Some(m @ ("require" | "verify-ca")) => return Err(TlsError::Unverified(m.to_string())),
        Some(other) => return Err(TlsError::BadMode(other.to_string())),
    };
    Ok((rest, tls))
}

/// `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A rustls client trusting only the certificates in `root`.
pub fn client_config(root: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let err = |detail: String| TlsError::Root {
        path: root.display().to_string(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_split_off_both_forms() {
        let (rest, tls) = split_tls(
            "postgresql://u:p@db.example:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("valid");
        assert_eq!(
            rest,
            "postgresql://u:p@db.example:5432/app?application_name=x"
        );
        assert_eq!(
            tls,
            Tls::VerifyFull {
                root: "/etc/ca.pem".into()
            }
        );
        let (rest, tls) = split_tls("host=db sslmode=prefer user=u").expect("valid");
        assert_eq!((rest.as_str(), tls), ("host=db user=u", Tls::Plain));
        let (rest, tls) = split_tls("postgresql://u@h/app").expect("valid");
        assert_eq!((rest.as_str(), tls), ("postgresql://u@h/app", Tls::Plain));
    }

    #[test]
    fn half_verified_modes_are_refused_with_the_fix() {
        for (conn, says) in [
            ("postgresql://h/app?sslmode=require", "verify-full"),
            ("postgresql://h/app?sslmode=verify-ca", "verify-full"),
            ("postgresql://h/app?sslmode=verify-full", "sslrootcert"),
            (
                "postgresql://h/app?sslmode=bogus",
                "disable, prefer or verify-full",
            ),
        ] {
            let e = split_tls(conn).expect_err(conn).to_string();
            assert!(e.contains(says), "{conn}: {e}");
        }
    }
}
