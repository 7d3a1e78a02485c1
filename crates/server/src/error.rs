//! Errors: [`ServerError`] for the server's own setup, and the API's error responses — every
//! one a JSON body `{"detail": "<text>"}`, as the original's server answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dynreg_registry_core::RegistryError;
use serde_json::json;

/// What can go wrong setting up or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An option is invalid.
    #[error("invalid server option {key}: {reason}")]
    Config {
        /// The option.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No token is configured and the address is not loopback.
    #[error(
        "refusing to serve without tokens on {addr}, which is not a loopback address: configure read and write tokens, or set insecure to serve an open registry"
    )]
    InsecureBind {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The listener failed.
    #[error("the registry server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// An API error: a status and a `detail`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
    pub(crate) allow: Option<&'static str>,
    pub(crate) authenticate: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            allow: None,
            authenticate: false,
        }
    }

    pub(crate) fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub(crate) fn not_found(bot_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("Bot '{bot_id}' not found"))
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::InvalidId { .. }
            | RegistryError::InvalidRegistration { .. }
            | RegistryError::InvalidQuery { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RegistryError::Conflict { .. } => StatusCode::PRECONDITION_FAILED,
            RegistryError::ReadOnly { .. } => StatusCode::FORBIDDEN,
            RegistryError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            _ => {
                tracing::error!(error = %e, "registry backend error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(json!({"detail": self.detail}))).into_response();
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.authenticate {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dynreg\""),
            );
        }
        resp
    }
}
