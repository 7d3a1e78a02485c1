//! # dynreg-server
//!
//! The HTTP registry server: the original's REST contract over any [`RegistryBackend`], so the
//! original's Python `HTTPRegistryBackend` and dynreg's own HTTP backend both work against it,
//! with what the original leaves out — bearer tokens, revisions as `ETag`s, conditional
//! writes, a watch on the change feed, limits, health checks and graceful shutdown.
//!
//! ```no_run
//! use std::sync::Arc;
//! use dynreg_registry_core::InMemoryBackend;
//! use dynreg_server::{RegistryServer, ServerConfig};
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RegistryServer::new(Arc::new(InMemoryBackend::new()))
//!     .with_config(ServerConfig::default().read_token("r3ad").write_token("wr1te"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! ## Routes
//! [`RegistryServer::router`] serves these under `/api/v1` (and `/healthz`, `/readyz` at the
//! root); [`RegistryServer::api_router`] is the same routes without a prefix, to mount in your
//! own axum app as the original's `create_registry_router(backend)` is mounted.
//!
//! | route | does | answers |
//! |---|---|---|
//! | `GET /configs` | list: `status`, `filter_metadata` (a JSON object), repeated `sort=field:asc\|desc`, `limit`, `offset` | `200 {"items": [...], "total": N}` |
//! | `GET /configs?since=REV[&watch=true&timeout=S]` | the change feed after `REV`; with `watch`, waits (long poll) until there is a change or the timeout passes | `200 {"changes": [...], "current_revision": N}`, or `410` when the cursor expired (relist) |
//! | `GET /configs/{bot_id}` | one registration (a touching read; `dynreg-touch: false` makes it a peek) | `200`, `304` on a matching `If-None-Match`, `404` |
//! | `POST /configs` | register (`bot_id`, `config`, `status`, `metadata` in the body) | `200` |
//! | `PUT /configs/{bot_id}` | register (`config`, `status` — default `active` —, `metadata`) | `200` |
//! | `DELETE /configs/{bot_id}` | hard delete | `204`, `404` |
//! | `POST /configs/{bot_id}/deactivate` | soft delete | `204`, `404` |
//! | `DELETE /configs` | delete everything, only with [`ServerConfig::allow_clear`] | `204`, else `405` |
//! | `GET /revision` | the registry's current revision | `200 {"revision": N}` |
//! | `GET\|PUT\|DELETE /config?bot_id=ID`, `POST /config/deactivate?bot_id=ID` | the item routes with the id as a query parameter: for the ids `.` and `..`, which no URL path can carry | as above |
//!
//! `/bots` is an alias of `/configs` throughout. Every error body is `{"detail": "<text>"}`.
//! Ids in paths are percent-decoded, so any id the registry accepts (`/`, `%`, spaces,
//! unicode) round-trips when the client encodes it as one path segment.
//!
//! ## Beyond the original
//! - **Auth.** With tokens configured, reads need a read or write token and writes a write
//!   token, sent as `Bearer <token>` on [`ServerConfig::auth_header`]; missing or unknown →
//!   `401`, a read token on a write → `403`, and nothing is written. Tokens are compared in
//!   constant time. With no token configured, [`RegistryServer::serve`] refuses an address
//!   other than loopback unless [`ServerConfig::insecure`] is set.
//! - **Revisions.** Responses about one registration carry `ETag: "<revision>"` and a
//!   `dynreg-revision` header; writes add `dynreg-write-effect` (`created`, `updated`,
//!   `unchanged`). `If-Match: "<revision>"` on `PUT`/`POST`, `DELETE` and deactivate makes the
//!   write a compare-and-swap (`412` on a conflict, nothing written); `If-None-Match: *` on
//!   `PUT`/`POST` makes it create-only.
//! - **Limits.** Bodies above [`ServerConfig::max_body_bytes`] get `413`; `limit` above
//!   [`ServerConfig::max_limit`], negative numbers, bodies that are not JSON objects and
//!   invalid ids get `422`.
//! - **Operations.** `/healthz` (the process is up), `/readyz` (the backend answers), request
//!   tracing through `tower-http`, and a graceful shutdown that finishes in-flight requests and
//!   ends waiting watches at once.
//!
//! What stays as in the original, for its clients: `POST` is an upsert (`200`, not `201`), a
//! `PUT` without `status` registers the bot as `active`, and a `GET` of one registration is a
//! touching read.

mod api;
mod auth;
mod config;
mod error;
#[cfg(feature = "knowledge")]
mod knowledge;
mod notify;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use dynreg_registry_core::RegistryBackend;

pub use config::{ServerConfig, Token};
pub use error::ServerError;
#[cfg(feature = "knowledge")]
pub use knowledge::{KnowledgeService, RagFactory};
pub use notify::ChangeNotifier;

/// The prefix [`RegistryServer::router`] mounts the API under.
pub const API_PREFIX: &str = "/api/v1";

/// An HTTP server over one registry backend.
#[derive(Clone)]
pub struct RegistryServer {
    state: Arc<api::AppState>,
    #[cfg(feature = "knowledge")]
    knowledge: Option<KnowledgeService>,
}

impl std::fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryServer")
            .field("backend", &self.state.backend)
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl RegistryServer {
    /// A server over `backend` with [`ServerConfig::default`] (open, so loopback only).
    pub fn new(backend: Arc<dyn RegistryBackend>) -> Self {
        let config = ServerConfig::default();
        let auth = auth::Auth::new(&config).expect("the default config is valid");
        RegistryServer {
            state: Arc::new(api::AppState {
                backend,
                config,
                auth,
                notifier: ChangeNotifier::new(),
            }),
            #[cfg(feature = "knowledge")]
            knowledge: None,
        }
    }

    /// The same server with the knowledge routes (feature `knowledge`) under the API prefix:
    /// `GET|POST /knowledge`, `GET|DELETE /knowledge/{domain}`, `GET /knowledge/{domain}/files`,
    /// `GET|PUT|DELETE /knowledge/{domain}/files/{path}` (streamed), `POST
    /// /knowledge/{domain}/ingest[?full=true|?changes_since=V]` and `GET /knowledge/{domain}/search?q=&k=`.
    #[cfg(feature = "knowledge")]
    pub fn with_knowledge(mut self, service: KnowledgeService) -> Self {
        self.knowledge = Some(service);
        self
    }

    /// The same server with `config`; an invalid option (an empty token, a bad header name) is
    /// an error naming it.
    pub fn with_config(self, config: ServerConfig) -> Result<Self, ServerError> {
        let auth = auth::Auth::new(&config)?;
        let state = api::AppState {
            backend: self.state.backend.clone(),
            config,
            auth,
            notifier: self.state.notifier.clone(),
        };
        Ok(RegistryServer {
            state: Arc::new(state),
            #[cfg(feature = "knowledge")]
            knowledge: self.knowledge,
        })
    }

    /// The options in force.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// The handle that wakes this server's watches (see [`ChangeNotifier`]).
    pub fn notifier(&self) -> ChangeNotifier {
        self.state.notifier.clone()
    }

    /// The registry routes without a prefix, with auth and the body limit applied: mount it
    /// with `Router::nest("/your/prefix", server.api_router())`.
    pub fn api_router(&self) -> Router {
        let s = self.state.clone();
        let routes = Router::new()
            .route("/revision", get(api::h_revision))
            .route(
                "/config",
                get(api::hq_get).put(api::hq_put).delete(api::hq_delete),
            )
            .route("/config/deactivate", post(api::hq_deactivate));
        let routes = ["configs", "bots"].into_iter().fold(routes, |r, base| {
            r.route(
                &format!("/{base}"),
                get(api::h_list).post(api::h_post).delete(api::h_clear),
            )
            .route(
                &format!("/{base}/{{bot_id}}"),
                get(api::h_get).put(api::h_put).delete(api::h_delete),
            )
            .route(
                &format!("/{base}/{{bot_id}}/deactivate"),
                post(api::h_deactivate),
            )
        });
        let routes: Router = routes.with_state(s.clone());
        #[cfg(feature = "knowledge")]
        let routes = match &self.knowledge {
            Some(k) => routes.merge(knowledge::routes(k.clone())),
            None => routes,
        };
        routes
            .fallback(api::not_found)
            .method_not_allowed_fallback(api::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                s.clone(),
                api::require_token,
            ))
            .layer(DefaultBodyLimit::max(s.config.max_body_bytes))
    }

    /// The whole service: the API under [`API_PREFIX`], `/healthz` and `/readyz`, with request
    /// tracing.
    pub fn router(&self) -> Router {
        Router::new()
            .nest(API_PREFIX, self.api_router())
            .route("/healthz", get(api::healthz))
            .route("/readyz", get(api::readyz).with_state(self.state.clone()))
            .layer(tower_http::trace::TraceLayer::new_for_http())
    }

    /// Serves [`RegistryServer::router`] on `listener` until `shutdown` completes, then stops
    /// accepting, ends waiting watches and finishes the requests in flight.
    ///
    /// Refuses ([`ServerError::InsecureBind`]) to serve without tokens on an address that is
    /// not loopback, unless [`ServerConfig::insecure`] is set.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = listener.local_addr()?;
        if !self.state.config.requires_auth()
            && !self.state.config.insecure
            && !addr.ip().is_loopback()
        {
            return Err(ServerError::InsecureBind { addr });
        }
        let notifier = self.state.notifier.clone();
        let shutdown = async move {
            shutdown.await;
            notifier.shut_down();
        };
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
