//! TLS for the server buses (features `postgres` and `redis`): one rustls client configuration
//! built from the bus's options.
//!
//! * **Crypto provider: `ring`, chosen explicitly** (`builder_with_provider`). This workspace
//!   compiles rustls with both `ring` (through sqlx) and `aws-lc-rs` (through object_store), so
//!   rustls cannot pick a process default by itself (`ClientConfig::builder()` would panic), and a
//!   library must not install a process-wide default behind the application's back. `ring` is
//!   the provider the registry's PostgreSQL connections (sqlx) already use, and it builds
//!   without cmake or NASM.
//! * **Trust:** with `ca_file` (a PEM file of one or more CA certificates) only those CAs are
//!   trusted, like libpq's `sslrootcert`; without it, the platform's trust store
//!   (`rustls-native-certs`, which honours `SSL_CERT_FILE` / `SSL_CERT_DIR`), or the Mozilla roots
//!   (`webpki-roots`) when the platform store has no usable certificate.
//! * **Verification is always full:** the server's certificate chain and its name (DNS name or
//!   IP address of the host in the URL) are checked; there is no "encrypt but don't verify" mode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use crate::error::EventBusError;

fn bad_ca(path: &Path, reason: String) -> EventBusError {
    EventBusError::InvalidConfig {
        key: "ca_file".into(),
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The trust anchors: the CAs of `ca_file`, else the platform's, else the Mozilla roots.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, EventBusError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| bad_ca(path, format!("cannot read: {e}")))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| bad_ca(path, format!("not a PEM certificate file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad_ca(path, format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad_ca(path, "contains no PEM certificate".into()));
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            errors = ?native.errors,
            "event bus TLS: no usable certificate in the platform trust store; trusting the Mozilla roots (webpki-roots)"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// A rustls client configuration (ring provider, safe protocol versions, no client certificate)
/// trusting `ca_file`'s CAs or the default roots.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, EventBusError> {
    with_roots(roots(ca_file)?)
}

/// A configuration that trusts nothing, for a Postgres connector whose `sslmode` is `disable`
/// (tokio-postgres needs a connector value even when it never negotiates TLS).
#[cfg(feature = "postgres")]
pub(crate) fn unused_config() -> Result<Arc<ClientConfig>, EventBusError> {
    with_roots(RootCertStore::empty())
}

fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, EventBusError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EventBusError::InvalidConfig {
            key: "ssl".into(),
            reason: format!("the ring TLS provider supports no safe protocol version: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads the `ssl` (boolean, or `"true"`/`"false"`) and `ca_file` (path) options.
pub(crate) fn options_from_json(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Option<bool>, Option<PathBuf>), EventBusError> {
    use serde_json::Value;
    let ssl = match map.get("ssl") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" | "" => Some(false),
            other => {
                return Err(EventBusError::InvalidConfig {
                    key: "ssl".into(),
                    reason: format!("expected true or false, got {other:?}"),
                });
            }
        },
        Some(other) => {
            return Err(EventBusError::InvalidConfig {
                key: "ssl".into(),
                reason: format!("expected true or false, got {other}"),
            });
        }
    };
    let ca_file = crate::config::string_key(map, "ca_file")?
        .filter(|s| !s.trim().is_empty())
        .map(PathBuf::from);
    Ok((ssl, ca_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_build_a_config() {
        let config = client_config(None).expect("default roots");
        // The explicitly chosen provider, whatever rustls features the build has.
        assert_eq!(
            config.crypto_provider().cipher_suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("dynreg-tls-{}", crate::new_uuid_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("ca_file") && err.contains("missing.pem"),
            "{err}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ssl_option_parsing() {
        let map = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            options_from_json(&map(
                serde_json::json!({"ssl": "true", "ca_file": "/x.pem"})
            ))
            .unwrap(),
            (Some(true), Some(PathBuf::from("/x.pem")))
        );
        assert_eq!(
            options_from_json(&map(serde_json::json!({"ssl": false}))).unwrap(),
            (Some(false), None)
        );
        let err = options_from_json(&map(serde_json::json!({"ssl": "maybe"}))).unwrap_err();
        assert!(matches!(err, EventBusError::InvalidConfig { ref key, .. } if key == "ssl"));
    }
}
