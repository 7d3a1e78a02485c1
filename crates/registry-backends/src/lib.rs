//! # dynreg-registry-backends
//!
//! Persistent implementations of [`RegistryBackend`] (from `dynreg-registry-core`) and the
//! [`create_registry_backend`] factory that picks one from configuration, as the original's
//! `create_registry_backend(type, config)` does.
//!
//! ```
//! use dynreg_registry_core::RegistryBackendExt;
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dynreg_registry_core::Result<()> {
//! // Any kind compiled in; the factory returns the backend initialized.
//! let registry = dynreg_registry_backends::create_registry_backend("memory", &serde_json::json!({})).await?;
//! registry.register("b1", serde_json::json!({"llm": {"model": "m"}})).await?;
//! assert!(registry.exists("b1").await?);
//! // An unknown option is an error that names the nearest valid one.
//! let err = dynreg_registry_backends::create_registry_backend("memory", &serde_json::json!({"tabel": "x"})).await;
//! assert!(err.is_err());
//! # Ok(()) }
//! ```
//!
//! ## Features (each backend behind its own)
//! | feature | kind | backend |
//! |---|---|---|
//! | `sqlite` (default) | `sqlite` | [`SqliteBackend`]: embedded SQLite (rusqlite, bundled), WAL |
//! | `postgres` | `postgres`, `postgresql` | [`PostgresBackend`]: sqlx pool, TLS through rustls |
//! | `file` | `file` | [`FileBackend`]: a directory of JSON documents, multi-process safe |
//! | `s3` | `s3` | [`S3Backend`]: object_store with ETag compare-and-swap |
//! | `http` | `http` | [`HttpBackend`]: a registry served over HTTP (a dynreg server, or the original's reference server) |
//!
//! The `memory` kind is always available (`InMemoryBackend` from the core crate). Every
//! backend passes the one conformance suite of `dynreg_registry_core::conformance`.
//!
//! ## Configuration
//! Each kind reads its options into one typed struct of [`config`] ([`config::SqliteConfig`],
//! [`config::PostgresConfig`], [`config::FileConfig`], [`config::S3Config`],
//! [`config::HttpConfig`], [`config::MemoryConfig`]): unknown keys are errors that suggest the nearest valid key, and
//! numbers and booleans may be strings, as `${VAR}` substitution writes them. A backend is
//! built from JSON with `from_config` or from its struct with `with_config`.

pub mod config;
mod factory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod touch;

#[cfg(any(feature = "file", feature = "s3"))]
mod doc_name;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use config::{DEFAULT_TOMBSTONE_RETENTION, DEFAULT_TOUCH_RESOLUTION, validate_identifier};
pub use dynreg_registry_core::RegistryBackend;
pub use factory::{SUPPORTED_KINDS, create_registry_backend};

#[cfg(feature = "file")]
pub use file::FileBackend;
#[cfg(feature = "http")]
pub use http::{HttpBackend, HttpStatusError};
#[cfg(feature = "postgres")]
pub use postgres::PostgresBackend;
#[cfg(feature = "s3")]
pub use s3::S3Backend;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteBackend;
