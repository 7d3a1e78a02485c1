//! [`ServerConfig`]: what the server accepts, from whom, and how much.

use std::fmt;
use std::time::Duration;

/// A bearer token the server accepts. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The server's options. `Default` is an open, loopback-only server (no tokens) with the
/// limits below.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Tokens that may read (list, get, watch). Write tokens may read too.
    pub read_tokens: Vec<Token>,
    /// Tokens that may write (register, deactivate, delete).
    pub write_tokens: Vec<Token>,
    /// The request header carrying `Bearer <token>` (default `authorization`; the original's
    /// client can send it on a custom header such as `X-API-Key`).
    pub auth_header: String,
    /// Serve without tokens on an address other than loopback (default `false`: refused).
    pub insecure: bool,
    /// Whether `DELETE /configs` (delete every registration) is allowed (default `false`:
    /// answered `405`, on which the original's client deletes one by one).
    pub allow_clear: bool,
    /// The largest request body accepted, in bytes (default 8 MiB).
    pub max_body_bytes: usize,
    /// The largest `limit` a list accepts (default 10,000).
    pub max_limit: usize,
    /// How long a watch waits for a change when the client names no `timeout` (default 30 s).
    pub watch_timeout: Duration,
    /// The longest `timeout` a watch accepts (default 5 minutes).
    pub max_watch_timeout: Duration,
    /// How often a waiting watch re-reads the change feed, to see writes that did not go
    /// through this server and were not announced to its [`crate::ChangeNotifier`]
    /// (default 1 s).
    pub watch_poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            read_tokens: Vec::new(),
            write_tokens: Vec::new(),
            auth_header: "authorization".to_owned(),
            insecure: false,
            allow_clear: false,
            max_body_bytes: 8 * 1024 * 1024,
            max_limit: 10_000,
            watch_timeout: Duration::from_secs(30),
            max_watch_timeout: Duration::from_secs(300),
            watch_poll_interval: Duration::from_secs(1),
        }
    }
}

impl ServerConfig {
    /// Adds a token that may read.
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        self.read_tokens.push(Token::new(token));
        self
    }

    /// Adds a token that may read and write.
    pub fn write_token(mut self, token: impl Into<String>) -> Self {
        self.write_tokens.push(Token::new(token));
        self
    }

    /// Allows `DELETE /configs`.
    pub fn allow_clear(mut self, allow: bool) -> Self {
        self.allow_clear = allow;
        self
    }

    /// Whether any token is configured (then every API request needs one).
    pub fn requires_auth(&self) -> bool {
        !(self.read_tokens.is_empty() && self.write_tokens.is_empty())
    }
}
