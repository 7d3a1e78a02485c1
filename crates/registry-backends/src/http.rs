//! `HttpBackend`: a registry served over HTTP — by a dynreg server (`dynreg-server`) or by the
//! original's reference server — speaking the original client's wire contract.
//!
//! Invariants:
//! - A write is one request (`PUT /configs/{id}` for a register; no probing read), and a
//!   read-only backend refuses writes before any I/O, as does an invalid id or config.
//! - Ids are sent as one percent-encoded path segment, so `/`, `%`, `?`, `#`, spaces and
//!   unicode round-trip; the ids `.` and `..`, which URL parsers remove from paths, go through
//!   the query form of the item routes (`/config?bot_id=..`), which only a dynreg server has.
//! - Lists re-apply the status, metadata filter and sort on the client (so a server that
//!   ignores them stays correct) but never `limit`/`offset`, as the original client does.
//! - Only idempotent requests (`GET`, `PUT`, `DELETE`) are retried, after a connection error or a
//!   `502`/`503`/`504`, with jittered exponential back-off; a conditional write is retried only
//!   after a connection error (the request was never received).
//! - What needs a dynreg server (conditional writes, the change feed, the current revision) is
//!   refused with [`RegistryError::Unsupported`] by a server without it, before anything is
//!   written.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use dynreg_registry_core::backend::validate_write;
use dynreg_registry_core::wire::{
    EFFECT_HEADER, REMOVED_HEADER, REVISION_HEADER, TOUCH_HEADER, etag, feed_from_json,
};
use dynreg_registry_core::{
    ChangeFeed, Deactivation, ListQuery, RegisterOptions, Registered, Registration,
    RegistryBackend, RegistryError, Result, Status, WriteCondition, WriteEffect, canonical_json,
    config_hash, validate_bot_id,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::config::{HttpConfig, build_from_json, invalid, redact_url};

const KIND: &str = "http";

/// Everything but the unreserved characters of RFC 3986 is encoded in an id's path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A response status the call did not expect, with the server's body text (the `source` of a
/// [`RegistryError::Storage`] from this backend).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} {path} answered {status}: {message}")]
pub struct HttpStatusError {
    /// The HTTP status.
    pub status: u16,
    /// The request method.
    pub method: String,
    /// The request path (without the query string).
    pub path: String,
    /// The response body as text (at most 1 KiB of it).
    pub message: String,
}

/// What is known of the server's dynreg extensions.
const UNKNOWN: u8 = 0;
const DYNREG: u8 = 1;
const LEGACY: u8 = 2;

/// A registry over HTTP. See the module docs for the contract.
pub struct HttpBackend {
    base: String,
    config: HttpConfig,
    client: RwLock<Option<reqwest::Client>>,
    server: AtomicU8,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackend")
            .field("base_url", &redact_url(&self.base))
            .field("read_only", &self.config.read_only)
            .field(
                "auth",
                &self.config.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl HttpBackend {
    /// A backend for the API at `base_url` (e.g. `http://127.0.0.1:8080/api/v1`) with the
    /// default options. Call `initialize` before use.
    pub fn new(base_url: impl Into<String>) -> Result<Self> {
        Self::with_config(HttpConfig {
            base_url: Some(base_url.into()),
            ..HttpConfig::default()
        })
    }

    /// Builds from JSON options (the keys of [`HttpConfig`]). Call `initialize` before use.
    pub fn from_config(config: &Value) -> Result<Self> {
        build_from_json(config, Self::with_config)
    }

    /// Builds from typed options. Call `initialize` before use.
    pub fn with_config(config: HttpConfig) -> Result<Self> {
        let base = config
            .base_url
            .as_deref()
            .ok_or_else(|| invalid(KIND, "base_url", "required"))?
            .trim_end_matches('/')
            .to_owned();
        // The value is not shown when it cannot be parsed (it could hold a password).
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| invalid(KIND, "base_url", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(invalid(
                KIND,
                "base_url",
                format!(
                    "{:?} must be an http:// or https:// URL without a query",
                    redact_url(&base)
                ),
            ));
        }
        HeaderName::from_bytes(config.auth_header.as_bytes()).map_err(|_| {
            invalid(
                KIND,
                "auth_header",
                format!("{:?} is not a header name", config.auth_header),
            )
        })?;
        Ok(HttpBackend {
            base,
            config,
            client: RwLock::new(None),
            server: AtomicU8::new(UNKNOWN),
        })
    }

    /// The API base URL (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Waits up to `timeout` for changes after `revision` (the server's long-poll watch);
    /// answers at once when there are some, and with an empty feed when none came in time.
    pub async fn watch(&self, revision: u64, timeout: Duration) -> Result<ChangeFeed> {
        let url = format!(
            "{}/configs?since={revision}&watch=true&timeout={}",
            self.base,
            timeout.as_secs_f64()
        );
        let deadline = timeout + Duration::from_secs_f64(self.config.timeout);
        self.feed("watch", url, Some(deadline)).await
    }

    fn client(&self) -> Result<reqwest::Client> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(RegistryError::NotInitialized { backend: KIND })
    }

    fn writable(&self, operation: &'static str) -> Result<()> {
        if self.config.read_only {
            return Err(RegistryError::ReadOnly {
                backend: KIND,
                operation,
            });
        }
        Ok(())
    }

    /// The URL of one registration (`suffix` is `""` or `"/deactivate"`).
    fn item_url(&self, bot_id: &str, suffix: &str) -> String {
        if bot_id == "." || bot_id == ".." {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("bot_id", bot_id)
                .finish();
            format!("{}/config{suffix}?{q}", self.base)
        } else {
            format!(
                "{}/configs/{}{suffix}",
                self.base,
                utf8_percent_encode(bot_id, SEGMENT)
            )
        }
    }

    /// Sends a request, retrying as the module docs say.
    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response> {
        let Call {
            operation,
            bot_id,
            method,
            url,
            headers,
            body,
            conditional,
            timeout,
        } = call;
        let client = self.client()?;
        let idempotent = matches!(method, Method::GET | Method::PUT | Method::DELETE);
        let mut attempt: u32 = 0;
        loop {
            // `Bytes` bodies and header maps are cheap to hand to each attempt.
            let mut req = client.request(method.clone(), url).headers(headers.clone());
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let out_of_retries = u64::from(attempt) >= self.config.retries;
            match req.send().await {
                Ok(resp) => {
                    let gateway = matches!(
                        resp.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if !(gateway && idempotent && !conditional) || out_of_retries {
                        return Ok(resp);
                    }
                }
                Err(e) => {
                    if !(idempotent && e.is_connect()) || out_of_retries {
                        return Err(RegistryError::storage(
                            KIND,
                            operation,
                            bot_id,
                            e.without_url(),
                        ));
                    }
                }
            }
            let base = 50u64.saturating_mul(1 << attempt.min(6)).min(2_000);
            let jitter = rand::random_range(base / 2..=base + base / 2);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
            attempt += 1;
        }
    }

    async fn status_error(
        operation: &'static str,
        bot_id: Option<&str>,
        method: &Method,
        resp: reqwest::Response,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let path = resp.url().path().to_owned();
        let mut message = resp.text().await.unwrap_or_default();
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        RegistryError::storage(
            KIND,
            operation,
            bot_id,
            HttpStatusError {
                status,
                method: method.to_string(),
                path,
                message,
            },
        )
    }

    async fn json_body(
        operation: &'static str,
        bot_id: Option<&str>,
        resp: reqwest::Response,
    ) -> Result<Value> {
        let path = resp.url().path().to_owned();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::storage(KIND, operation, bot_id, e.without_url()))?;
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            backend: KIND,
            location: path,
            reason: format!("the response to {operation} is not JSON: {e}"),
        })
    }

    /// Reads a registration as the original client does: `bot_id` (or `id`), `config`
    /// (default `{}`), `status` (default `active`), `metadata` (`null` is `{}`); timestamps with
    /// `Z` or `+00:00`, with or without fractions. Unlike the original, an unreadable timestamp
    /// is an error naming it, not silently "now".
    fn parse_registration(location: &str, value: Value) -> Result<Registration> {
        let corrupt = |reason: String| RegistryError::Corrupt {
            backend: KIND,
            location: location.to_owned(),
            reason,
        };
        let Value::Object(mut m) = value else {
            return Err(corrupt(format!(
                "expected a registration object, got {value}"
            )));
        };
        if !m.contains_key("bot_id") {
            let id = m
                .remove("id")
                .unwrap_or_else(|| Value::String(String::new()));
            m.insert("bot_id".into(), id);
        }
        m.entry("config").or_insert_with(|| json!({}));
        if m.get("status").is_none_or(Value::is_null) {
            m.insert("status".into(), json!("active"));
        }
        let mut reg: Registration =
            serde_json::from_value(Value::Object(m)).map_err(|e| corrupt(e.to_string()))?;
        if reg.config_hash.is_empty() {
            reg.config_hash = config_hash(&reg.config);
        }
        Ok(reg)
    }

    /// Whether the server has dynreg's extensions (asked once, with `GET /revision`).
    async fn is_dynreg_server(&self) -> Result<bool> {
        match self.server.load(Ordering::Relaxed) {
            DYNREG => return Ok(true),
            LEGACY => return Ok(false),
            _ => {}
        }
        let url = format!("{}/revision", self.base);
        let resp = self
            .send(Call::new("probe", None, Method::GET, &url))
            .await?;
        let known = match resp.status() {
            s if s.is_success() => resp.headers().contains_key(REVISION_HEADER),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => false,
            _ => return Err(Self::status_error("probe", None, &Method::GET, resp).await),
        };
        self.server
            .store(if known { DYNREG } else { LEGACY }, Ordering::Relaxed);
        Ok(known)
    }

    fn note_server(&self, resp: &reqwest::Response) {
        if resp.headers().contains_key(REVISION_HEADER) {
            self.server.store(DYNREG, Ordering::Relaxed);
        }
    }

    async fn unsupported(&self, operation: &'static str, what: &str) -> Result<()> {
        if self.is_dynreg_server().await? {
            Ok(())
        } else {
            Err(RegistryError::Unsupported {
                backend: KIND,
                operation,
                reason: format!(
                    "the server at {} has no {what} (it is not a dynreg server)",
                    self.base
                ),
            })
        }
    }

    async fn feed(
        &self,
        operation: &'static str,
        url: String,
        timeout: Option<Duration>,
    ) -> Result<ChangeFeed> {
        let resp = self
            .send(Call::new(operation, None, Method::GET, &url).timeout(timeout))
            .await?;
        let status = resp.status();
        if !(status.is_success() || status == StatusCode::GONE) {
            return Err(Self::status_error(operation, None, &Method::GET, resp).await);
        }
        let path = resp.url().path().to_owned();
        let body = Self::json_body(operation, None, resp).await?;
        if body.get("changes").is_none() && body.get("expired").is_none() {
            return Err(RegistryError::Unsupported {
                backend: KIND,
                operation: "changes_since",
                reason: format!(
                    "the server at {} answered a change-feed request with a list (it is not a dynreg server); poll with list instead",
                    self.base
                ),
            });
        }
        feed_from_json(&body).map_err(|reason| RegistryError::Corrupt {
            backend: KIND,
            location: path,
            reason,
        })
    }

    fn list_url(&self, query: &ListQuery, count_only: bool) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(f) = query.filter_metadata.as_ref().filter(|f| !f.is_empty()) {
            let text = canonical_json(&Value::Object(f.clone()));
            q.append_pair("filter_metadata", &String::from_utf8_lossy(&text));
        }
        if let Some(s) = &query.status {
            q.append_pair("status", s.as_str());
        }
        if !count_only {
            for s in &query.sort {
                q.append_pair("sort", &format!("{}:{}", s.field, s.order.as_str()));
            }
        }
        if count_only {
            q.append_pair("limit", "0");
        } else {
            // A limit no registry can reach means "all": it is not sent, so a server's cap on
            // page sizes does not refuse it.
            if let Some(l) = query.limit.filter(|&l| l <= u32::MAX as usize) {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(o) = query.offset {
                q.append_pair("offset", &o.to_string());
            }
        }
        let q = q.finish();
        if q.is_empty() {
            format!("{}/configs", self.base)
        } else {
            format!("{}/configs?{q}", self.base)
        }
    }

    /// `GET /configs` and its rows, parsed from a list, `{"items": [...]}` or
    /// `{"configs": [...]}`, and the `total` when the server sent one.
    async fn fetch_list(&self, url: &str) -> Result<(Vec<Registration>, Option<u64>)> {
        let resp = self.send(Call::new("list", None, Method::GET, url)).await?;
        if !resp.status().is_success() {
            return Err(Self::status_error("list", None, &Method::GET, resp).await);
        }
        self.note_server(&resp);
        let path = resp.url().path().to_owned();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::storage(KIND, "list", None, e.without_url()))?;
        // The fast path: a dynreg server's page, read straight into registrations.
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<Registration>,
            total: Option<u64>,
        }
        if let Ok(page) = serde_json::from_slice::<Page>(&bytes) {
            let rows = page
                .items
                .into_iter()
                .map(|mut r| {
                    if r.config_hash.is_empty() {
                        r.config_hash = config_hash(&r.config);
                    }
                    r
                })
                .collect();
            return Ok((rows, page.total));
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            backend: KIND,
            location: path.clone(),
            reason: format!("the response to list is not JSON: {e}"),
        })?;
        let (items, total) = match body {
            Value::Array(items) => (items, None),
            Value::Object(mut m) => {
                let total = m.get("total").and_then(Value::as_u64);
                match m.remove("items").or_else(|| m.remove("configs")) {
                    Some(Value::Array(items)) => (items, total),
                    _ => {
                        return Err(RegistryError::Corrupt {
                            backend: KIND,
                            location: path,
                            reason: "a list response must be a list, or an object with an \"items\" or \"configs\" list".to_owned(),
                        });
                    }
                }
            }
            other => {
                return Err(RegistryError::Corrupt {
                    backend: KIND,
                    location: path,
                    reason: format!("a list response must be a list or an object, got {other}"),
                });
            }
        };
        let rows = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| Self::parse_registration(&format!("{path} (item {i})"), v))
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, total))
    }
}

/// One request: what [`HttpBackend::send`] needs to send and retry it.
struct Call<'a> {
    operation: &'static str,
    bot_id: Option<&'a str>,
    method: Method,
    url: &'a str,
    headers: HeaderMap,
    body: Option<bytes::Bytes>,
    /// A conditional write: retried only after a connection error.
    conditional: bool,
    /// A deadline other than the client's default.
    timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    fn new(operation: &'static str, bot_id: Option<&'a str>, method: Method, url: &'a str) -> Self {
        Call {
            operation,
            bot_id,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            conditional: false,
            timeout: None,
        }
    }

    fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(bytes::Bytes::from(body));
        self
    }

    fn conditional(mut self, conditional: bool) -> Self {
        self.conditional = conditional;
        self
    }

    fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("entity tags are valid header values")
}

#[async_trait]
impl RegistryBackend for HttpBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn initialize(&self) -> Result<()> {
        if self
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = &self.config.auth_token {
            let name = HeaderName::from_bytes(self.config.auth_header.as_bytes())
                .map_err(|_| invalid(KIND, "auth_header", "not a header name"))?;
            // As the original: "Bearer " is sent on whatever header is configured.
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                invalid(
                    KIND,
                    "auth_token",
                    "must be printable ASCII without newlines",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs_f64(self.config.timeout))
            .connect_timeout(Duration::from_secs_f64(self.config.connect_timeout))
            .tcp_nodelay(true)
            .tls_danger_accept_invalid_certs(!self.config.verify_ssl)
            .build()
            .map_err(|e| RegistryError::storage(KIND, "initialize", None, e))?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.client
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Ok(())
    }

    async fn register_reporting(
        &self,
        bot_id: &str,
        config: Arc<Value>,
        options: RegisterOptions,
    ) -> Result<Registered> {
        self.client()?;
        self.writable("register")?;
        validate_write(bot_id, &config, &options)?;
        let mut headers = HeaderMap::new();
        let conditional = options.condition != WriteCondition::Any;
        match options.condition {
            WriteCondition::Any => {}
            WriteCondition::MustNotExist => {
                self.unsupported("register", "conditional writes").await?;
                headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
            }
            WriteCondition::Revision(r) => {
                self.unsupported("register", "conditional writes").await?;
                headers.insert(header::IF_MATCH, header_value(&etag(r)));
            }
        }
        let body = serde_json::to_vec(&json!({
            "bot_id": bot_id,
            "config": &*config,
            "status": options.status.as_str(),
            "metadata": &*options.metadata,
        }))
        .map_err(|e| RegistryError::storage(KIND, "register", Some(bot_id), e))?;
        let url = self.item_url(bot_id, "");
        let resp = self
            .send(
                Call::new("register", Some(bot_id), Method::PUT, &url)
                    .headers(headers)
                    .body(body)
                    .conditional(conditional),
            )
            .await?;
        match resp.status() {
            StatusCode::PRECONDITION_FAILED => {
                let actual = self.peek(bot_id).await?.map(|r| r.revision);
                return Err(RegistryError::Conflict {
                    bot_id: bot_id.to_owned(),
                    expected: options.condition,
                    actual,
                });
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                let detail = detail(resp).await;
                return Err(RegistryError::InvalidRegistration {
                    bot_id: bot_id.to_owned(),
                    reason: detail,
                });
            }
            s if !s.is_success() => {
                return Err(Self::status_error("register", Some(bot_id), &Method::PUT, resp).await);
            }
            _ => {}
        }
        self.note_server(&resp);
        let effect = resp
            .headers()
            .get(EFFECT_HEADER)
            .and_then(|v| parse_effect(v.as_bytes()));
        let path = resp.url().path().to_owned();
        let reg = Self::parse_registration(
            &path,
            Self::json_body("register", Some(bot_id), resp).await?,
        )?;
        let effect = effect.unwrap_or(if reg.created_at == reg.updated_at {
            WriteEffect::Created
        } else {
            WriteEffect::Updated
        });
        Ok(Registered {
            registration: reg,
            effect,
        })
    }

    async fn get(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.read_one("get", bot_id, true).await
    }

    async fn peek(&self, bot_id: &str) -> Result<Option<Registration>> {
        self.read_one("peek", bot_id, false).await
    }

    async fn deactivate_reporting(&self, bot_id: &str) -> Result<Deactivation> {
        self.client()?;
        self.writable("deactivate")?;
        validate_bot_id(bot_id)?;
        let url = self.item_url(bot_id, "/deactivate");
        let resp = self
            .send(Call::new("deactivate", Some(bot_id), Method::POST, &url))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(Deactivation::ABSENT),
            s if s.is_success() => {
                let h = resp.headers();
                let revision = h
                    .get(REVISION_HEADER)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let effect = h
                    .get(EFFECT_HEADER)
                    .and_then(|v| parse_effect(v.as_bytes()))
                    .unwrap_or(WriteEffect::Updated);
                Ok(Deactivation {
                    effect,
                    revision: revision.filter(|_| effect.changed()),
                })
            }
            _ => Err(Self::status_error("deactivate", Some(bot_id), &Method::POST, resp).await),
        }
    }

    async fn unregister(&self, bot_id: &str) -> Result<bool> {
        self.client()?;
        self.writable("unregister")?;
        validate_bot_id(bot_id)?;
        let url = self.item_url(bot_id, "");
        let resp = self
            .send(Call::new("unregister", Some(bot_id), Method::DELETE, &url))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(Self::status_error("unregister", Some(bot_id), &Method::DELETE, resp).await),
        }
    }

    async fn unregister_if(&self, bot_id: &str, revision: u64) -> Result<()> {
        self.client()?;
        self.writable("unregister")?;
        validate_bot_id(bot_id)?;
        self.unsupported("unregister", "conditional deletes")
            .await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, header_value(&etag(revision)));
        let url = self.item_url(bot_id, "");
        let resp = self
            .send(
                Call::new("unregister", Some(bot_id), Method::DELETE, &url)
                    .headers(headers)
                    .conditional(true),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => {
                let actual = self.peek(bot_id).await?.map(|r| r.revision);
                Err(RegistryError::Conflict {
                    bot_id: bot_id.to_owned(),
                    expected: WriteCondition::Revision(revision),
                    actual,
                })
            }
            _ => Err(Self::status_error("unregister", Some(bot_id), &Method::DELETE, resp).await),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Registration>>> {
        query.validate()?;
        let (rows, _) = self.fetch_list(&self.list_url(query, false)).await?;
        // Status, filter and sort again on this side; the page is the server's.
        let local = ListQuery {
            limit: None,
            offset: None,
            ..query.clone()
        };
        Ok(local.apply(rows)?.into_iter().map(Arc::new).collect())
    }

    async fn count_where(
        &self,
        status: Option<&Status>,
        filter_metadata: Option<&Map<String, Value>>,
    ) -> Result<u64> {
        let query = ListQuery {
            status: status.cloned(),
            filter_metadata: filter_metadata.cloned(),
            ..ListQuery::default()
        };
        let (_, total) = self.fetch_list(&self.list_url(&query, true)).await?;
        if let Some(total) = total {
            return Ok(total);
        }
        // A server without totals: count the whole list.
        Ok(self.list(&query).await?.len() as u64)
    }

    async fn changes_since(&self, revision: u64) -> Result<ChangeFeed> {
        self.feed(
            "changes_since",
            format!("{}/configs?since={revision}", self.base),
            None,
        )
        .await
    }

    async fn current_revision(&self) -> Result<u64> {
        let url = format!("{}/revision", self.base);
        let resp = self
            .send(Call::new("current_revision", None, Method::GET, &url))
            .await?;
        if matches!(
            resp.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            self.server.store(LEGACY, Ordering::Relaxed);
            return Err(RegistryError::Unsupported {
                backend: KIND,
                operation: "current_revision",
                reason: format!(
                    "the server at {} has no revisions (it is not a dynreg server)",
                    self.base
                ),
            });
        }
        if !resp.status().is_success() {
            return Err(Self::status_error("current_revision", None, &Method::GET, resp).await);
        }
        self.note_server(&resp);
        let path = resp.url().path().to_owned();
        let body = Self::json_body("current_revision", None, resp).await?;
        body.get("revision")
            .and_then(Value::as_u64)
            .ok_or_else(|| RegistryError::Corrupt {
                backend: KIND,
                location: path,
                reason: "expected {\"revision\": <integer>}".to_owned(),
            })
    }

    async fn clear(&self) -> Result<u64> {
        self.client()?;
        self.writable("clear")?;
        let known = self.server.load(Ordering::Relaxed) == DYNREG;
        let before = if known {
            None
        } else {
            Some(self.count_where(None, None).await?)
        };
        let url = format!("{}/configs", self.base);
        let resp = self
            .send(Call::new("clear", None, Method::DELETE, &url))
            .await?;
        match resp.status() {
            StatusCode::METHOD_NOT_ALLOWED => {
                // The server refuses a bulk delete: delete one by one, as the original does.
                let mut removed = 0;
                for reg in self.list(&ListQuery::default()).await? {
                    if self.unregister(&reg.bot_id).await? {
                        removed += 1;
                    }
                }
                Ok(removed)
            }
            s if s.is_success() => Ok(resp
                .headers()
                .get(REMOVED_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .or(before)
                .unwrap_or(0)),
            _ => Err(Self::status_error("clear", None, &Method::DELETE, resp).await),
        }
    }
}

impl HttpBackend {
    async fn read_one(
        &self,
        operation: &'static str,
        bot_id: &str,
        touch: bool,
    ) -> Result<Option<Registration>> {
        self.client()?;
        validate_bot_id(bot_id)?;
        let mut headers = HeaderMap::new();
        if !touch {
            headers.insert(TOUCH_HEADER, HeaderValue::from_static("false"));
        }
        let url = self.item_url(bot_id, "");
        let resp = self
            .send(Call::new(operation, Some(bot_id), Method::GET, &url).headers(headers))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                self.note_server(&resp);
                let path = resp.url().path().to_owned();
                let body = Self::json_body(operation, Some(bot_id), resp).await?;
                Self::parse_registration(&path, body).map(Some)
            }
            _ => Err(Self::status_error(operation, Some(bot_id), &Method::GET, resp).await),
        }
    }
}

fn parse_effect(v: &[u8]) -> Option<WriteEffect> {
    Some(match v {
        b"created" => WriteEffect::Created,
        b"updated" => WriteEffect::Updated,
        b"unchanged" => WriteEffect::Unchanged,
        b"absent" => WriteEffect::Absent,
        _ => return None,
    })
}

/// The `detail` of an error body, or the body text.
async fn detail(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => match m.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => text,
        },
        _ => text,
    }
}
