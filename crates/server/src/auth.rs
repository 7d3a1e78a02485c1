//! Bearer-token checks. Invariant: a presented token is compared with every configured token,
//! each comparison in constant time over SHA-256 digests (so neither the position of the first
//! differing byte nor the token's length shows in the timing), and the result does not depend
//! on which token matched first.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ServerConfig;

/// What a request is allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    None,
    Read,
    Write,
}

pub(crate) struct Auth {
    read: Vec<[u8; 32]>,
    write: Vec<[u8; 32]>,
    pub(crate) header: axum::http::HeaderName,
    pub(crate) required: bool,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn any_matches(set: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    let mut found = subtle::Choice::from(0);
    for t in set {
        found |= t.ct_eq(presented);
    }
    found.into()
}

impl Auth {
    pub(crate) fn new(config: &ServerConfig) -> Result<Auth, crate::ServerError> {
        let header =
            axum::http::HeaderName::from_bytes(config.auth_header.as_bytes()).map_err(|_| {
                crate::ServerError::Config {
                    key: "auth_header",
                    reason: format!("{:?} is not a valid header name", config.auth_header),
                }
            })?;
        for t in config.read_tokens.iter().chain(&config.write_tokens) {
            if t.expose().is_empty() {
                return Err(crate::ServerError::Config {
                    key: "tokens",
                    reason: "a token must not be empty".to_owned(),
                });
            }
        }
        Ok(Auth {
            read: config
                .read_tokens
                .iter()
                .map(|t| digest(t.expose()))
                .collect(),
            write: config
                .write_tokens
                .iter()
                .map(|t| digest(t.expose()))
                .collect(),
            header,
            required: config.requires_auth(),
        })
    }

    /// The access a header value grants (`None` when absent or unknown).
    pub(crate) fn access(&self, value: Option<&[u8]>) -> Access {
        if !self.required {
            return Access::Write;
        }
        let Some(value) = value else {
            return Access::None;
        };
        let Some(token) = strip_bearer(value) else {
            return Access::None;
        };
        let presented = Sha256::digest(token).into();
        let write = any_matches(&self.write, &presented);
        let read = any_matches(&self.read, &presented);
        if write {
            Access::Write
        } else if read {
            Access::Read
        } else {
            Access::None
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        let cfg = ServerConfig::default().read_token("r").write_token("w");
        let a = Auth::new(&cfg).unwrap();
        assert_eq!(a.access(None), Access::None);
        assert_eq!(a.access(Some(b"Bearer r")), Access::Read);
        assert_eq!(a.access(Some(b"bearer w")), Access::Write);
        assert_eq!(a.access(Some(b"Bearer x")), Access::None);
        assert_eq!(a.access(Some(b"Basic w")), Access::None);
        assert_eq!(a.access(Some(b"w")), Access::None);
        assert_eq!(a.access(Some(b"Bearer ")), Access::None);
        let open = Auth::new(&ServerConfig::default()).unwrap();
        assert_eq!(open.access(None), Access::Write);
        assert!(Auth::new(&ServerConfig::default().read_token("")).is_err());
    }
}
