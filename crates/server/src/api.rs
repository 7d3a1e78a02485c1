//! The REST routes. Invariants: every error body is `{"detail": ...}`; a request that is refused
//! (auth, limits, bad input) writes nothing; ids are percent-decoded path segments (or the
//! `bot_id` query parameter of the `/config` routes) and validated by the registry before any
//! write; every response about one registration carries its revision as an `ETag`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dynreg_registry_core::wire::{
    EFFECT_HEADER, REMOVED_HEADER, REVISION_HEADER, TOUCH_HEADER, etag, feed_to_json, parse_etag,
};
use dynreg_registry_core::{
    ChangeFeed, ListQuery, RegisterOptions, Registration, RegistryBackend, SortSpec, Status,
    WriteCondition, WriteEffect,
};
use serde_json::{Map, Value, json};

use crate::auth::{Access, Auth};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::notify::ChangeNotifier;

pub(crate) struct AppState {
    pub(crate) backend: Arc<dyn RegistryBackend>,
    pub(crate) config: ServerConfig,
    pub(crate) auth: Auth,
    pub(crate) notifier: ChangeNotifier,
}

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// Refuses requests without the access their method needs: reads (`GET`, `HEAD`) need a read
/// or write token, everything else a write token.
pub(crate) async fn require_token(State(state): St, req: Request, next: Next) -> Response {
    let auth: &Auth = &state.auth;
    let access = auth.access(req.headers().get(&auth.header).map(HeaderValue::as_bytes));
    let needed = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    if access >= needed {
        return next.run(req).await;
    }
    let err = if access == Access::None {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        e.authenticate = true;
        e
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "this token may read but not write")
    };
    err.into_response()
}

// ---------- ids and bodies ----------

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the bot id in the path cannot be read: {e}"),
        )
    })
}

fn query_id(query: &Option<String>) -> Result<String, ApiError> {
    let q = query.as_deref().unwrap_or("");
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "bot_id")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::unprocessable("query parameter 'bot_id' is required"))
}

fn json_object(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes"),
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, other.body_text()),
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::unprocessable(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::unprocessable(format!(
            "Body must be a JSON object, not {}",
            type_name(&other)
        ))),
    }
}

use dynreg_registry_core::backend::json_type_name as type_name;

/// The condition of a write from `If-Match` (`"<revision>"`, or `*`: the registration must
/// exist) and `If-None-Match: *` (it must not).
async fn write_condition(
    backend: &dyn RegistryBackend,
    bot_id: &str,
    headers: &HeaderMap,
) -> Result<WriteCondition, ApiError> {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        return if v.as_bytes().trim_ascii() == b"*" {
            Ok(WriteCondition::MustNotExist)
        } else {
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "on a write, If-None-Match accepts only '*' (create only)",
            ))
        };
    }
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(WriteCondition::Any);
    };
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        // "Must exist": pinned to the revision seen now, so the write is still one
        // compare-and-swap.
        return match backend.peek(bot_id).await? {
            Some(r) => Ok(WriteCondition::Revision(r.revision)),
            None => Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("Bot '{bot_id}' does not exist (If-Match: *)"),
            )),
        };
    }
    parse_etag(text)
        .map(WriteCondition::Revision)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("If-Match must be '*' or one entity tag such as \"12\", got {text:?}"),
            )
        })
}

fn registration_response(reg: &Registration, effect: Option<WriteEffect>) -> Response {
    let mut resp = axum::Json(reg).into_response();
    let h = resp.headers_mut();
    h.insert(header::ETAG, hv(&etag(reg.revision)));
    h.insert(REVISION_HEADER, hv(&reg.revision.to_string()));
    if let Some(effect) = effect {
        h.insert(EFFECT_HEADER, HeaderValue::from_static(effect_name(effect)));
    }
    resp
}

fn effect_name(effect: WriteEffect) -> &'static str {
    match effect {
        WriteEffect::Absent => "absent",
        WriteEffect::Unchanged => "unchanged",
        WriteEffect::Created => "created",
        WriteEffect::Updated => "updated",
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("digits and quotes are a valid header value")
}

fn no_content(revision: Option<u64>, effect: Option<WriteEffect>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    if let Some(r) = revision {
        h.insert(REVISION_HEADER, hv(&r.to_string()));
    }
    if let Some(e) = effect {
        h.insert(EFFECT_HEADER, HeaderValue::from_static(effect_name(e)));
    }
    resp
}

// ---------- one registration ----------

async fn get_one(state: &AppState, bot_id: &str, headers: &HeaderMap) -> ApiResult {
    let touch = headers
        .get(TOUCH_HEADER)
        .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"false"));
    let reg = if touch {
        state.backend.get(bot_id).await?
    } else {
        state.backend.peek(bot_id).await?
    };
    let reg = reg.ok_or_else(|| ApiError::not_found(bot_id))?;
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let tag = etag(reg.revision);
        let hit = inm
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim() == "*" || parse_etag(t) == Some(reg.revision));
        if hit {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut().insert(header::ETAG, hv(&tag));
            return Ok(resp);
        }
    }
    Ok(registration_response(&reg, None))
}

async fn put_one(
    state: &AppState,
    bot_id: &str,
    headers: &HeaderMap,
    mut body: Map<String, Value>,
    missing: &'static str,
) -> ApiResult {
    let Some(config) = body.remove("config") else {
        return Err(ApiError::unprocessable(missing));
    };
    let status = match body.remove("status") {
        None | Some(Value::Null) => Status::Active,
        Some(Value::String(s)) => Status::parse(&s),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "status must be a string, not {}",
                type_name(&other)
            )));
        }
    };
    let metadata = match body.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "metadata must be an object, not {}",
                type_name(&other)
            )));
        }
    };
    let condition = write_condition(state.backend.as_ref(), bot_id, headers).await?;
    let options = RegisterOptions {
        status,
        metadata: Arc::new(metadata),
        condition,
    };
    let done = state
        .backend
        .register_reporting(bot_id, Arc::new(config), options)
        .await?;
    if done.effect.changed() {
        state.notifier.notify();
    }
    Ok(registration_response(&done.registration, Some(done.effect)))
}

async fn delete_one(state: &AppState, bot_id: &str, headers: &HeaderMap) -> ApiResult {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "If-None-Match does not apply to DELETE",
        ));
    }
    if let Some(v) = headers.get(header::IF_MATCH) {
        let text = v.to_str().unwrap_or("").trim();
        if text != "*" {
            let revision = parse_etag(text).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("If-Match must be '*' or one entity tag such as \"12\", got {text:?}"),
                )
            })?;
            state.backend.unregister_if(bot_id, revision).await?;
            state.notifier.notify();
            return Ok(no_content(None, None));
        }
        // `*`: the registration must exist, which a plain delete answers with 404.
    }
    if state.backend.unregister(bot_id).await? {
        state.notifier.notify();
        Ok(no_content(None, None))
    } else {
        Err(ApiError::not_found(bot_id))
    }
}

async fn deactivate_one(state: &AppState, bot_id: &str, headers: &HeaderMap) -> ApiResult {
    let condition = write_condition(state.backend.as_ref(), bot_id, headers).await?;
    if let WriteCondition::Revision(expected) = condition {
        // A conditional deactivate is a compare-and-swap register of the same config and
        // metadata with status inactive.
        let current = state
            .backend
            .peek(bot_id)
            .await?
            .ok_or_else(|| ApiError::not_found(bot_id))?;
        let options = RegisterOptions {
            status: Status::Inactive,
            metadata: current.metadata.clone(),
            condition: WriteCondition::Revision(expected),
        };
        let done = state
            .backend
            .register_reporting(bot_id, current.config.clone(), options)
            .await?;
        if done.effect.changed() {
            state.notifier.notify();
        }
        return Ok(no_content(
            Some(done.registration.revision),
            Some(done.effect),
        ));
    }
    if condition == WriteCondition::MustNotExist {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "If-None-Match does not apply to deactivate",
        ));
    }
    let d = state.backend.deactivate_reporting(bot_id).await?;
    match d.effect {
        WriteEffect::Absent => Err(ApiError::not_found(bot_id)),
        effect => {
            if effect.changed() {
                state.notifier.notify();
            }
            Ok(no_content(d.revision, Some(effect)))
        }
    }
}

// ---------- handlers: path form, query form, collection ----------

pub(crate) async fn h_get(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    get_one(&s, &path_id(path)?, &headers).await
}

pub(crate) async fn h_put(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(path)?;
    let body = json_object(body, s.config.max_body_bytes)?;
    put_one(&s, &id, &headers, body, "Body must include 'config'").await
}

pub(crate) async fn h_delete(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    delete_one(&s, &path_id(path)?, &headers).await
}

pub(crate) async fn h_deactivate(
    State(s): St,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    deactivate_one(&s, &path_id(path)?, &headers).await
}

pub(crate) async fn hq_get(State(s): St, RawQuery(q): RawQuery, headers: HeaderMap) -> ApiResult {
    get_one(&s, &query_id(&q)?, &headers).await
}

pub(crate) async fn hq_put(
    State(s): St,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = query_id(&q)?;
    let body = json_object(body, s.config.max_body_bytes)?;
    put_one(&s, &id, &headers, body, "Body must include 'config'").await
}

pub(crate) async fn hq_delete(
    State(s): St,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    delete_one(&s, &query_id(&q)?, &headers).await
}

pub(crate) async fn hq_deactivate(
    State(s): St,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    deactivate_one(&s, &query_id(&q)?, &headers).await
}

pub(crate) async fn h_post(
    State(s): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut body = json_object(body, s.config.max_body_bytes)?;
    let missing = "Body must include 'bot_id' and 'config'";
    if !body.contains_key("config") {
        return Err(ApiError::unprocessable(missing));
    }
    let id = match body.remove("bot_id") {
        Some(Value::String(id)) => id,
        None | Some(Value::Null) => return Err(ApiError::unprocessable(missing)),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "bot_id must be a string, not {}",
                type_name(&other)
            )));
        }
    };
    put_one(&s, &id, &headers, body, missing).await
}

pub(crate) async fn h_clear(State(s): St) -> ApiResult {
    if !s.config.allow_clear {
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "deleting every registration is disabled on this server; delete them one by one",
        );
        e.allow = Some("GET, POST");
        return Err(e);
    }
    let removed = s.backend.clear().await?;
    let revision = s.backend.current_revision().await?;
    if removed > 0 {
        s.notifier.notify();
    }
    let mut resp = no_content(Some(revision), None);
    resp.headers_mut()
        .insert(REMOVED_HEADER, hv(&removed.to_string()));
    Ok(resp)
}

pub(crate) async fn h_revision(State(s): St) -> ApiResult {
    let revision = s.backend.current_revision().await?;
    let mut resp = axum::Json(json!({"revision": revision})).into_response();
    resp.headers_mut()
        .insert(REVISION_HEADER, hv(&revision.to_string()));
    Ok(resp)
}

// ---------- lists and the watch ----------

struct ListParams {
    query: ListQuery,
    since: Option<u64>,
    watch: bool,
    timeout: Option<Duration>,
}

fn parse_count(name: &str, v: &str) -> Result<usize, ApiError> {
    v.trim().parse::<usize>().map_err(|_| {
        ApiError::unprocessable(format!("{name} must be a non-negative integer, got {v:?}"))
    })
}

fn parse_list_params(raw: Option<&str>, config: &ServerConfig) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        query: ListQuery::default(),
        since: None,
        watch: false,
        timeout: None,
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "filter_metadata" if v.is_empty() => {}
            "filter_metadata" => {
                let parsed: Value = serde_json::from_str(&v).map_err(|e| {
                    ApiError::unprocessable(format!("filter_metadata must be valid JSON: {e}"))
                })?;
                match parsed {
                    Value::Object(m) if m.is_empty() => {}
                    Value::Object(m) => p.query.filter_metadata = Some(m),
                    _ => {
                        return Err(ApiError::unprocessable(
                            "filter_metadata must be a JSON object",
                        ));
                    }
                }
            }
            "status" if v.is_empty() => {}
            "status" => p.query.status = Some(Status::parse(&v)),
            "sort" => p.query.sort.push(SortSpec::parse(&v)?),
            "limit" => {
                let limit = parse_count("limit", &v)?;
                if limit > config.max_limit {
                    return Err(ApiError::unprocessable(format!(
                        "limit must be at most {}, got {limit}",
                        config.max_limit
                    )));
                }
                p.query.limit = Some(limit);
            }
            "offset" => p.query.offset = Some(parse_count("offset", &v)?),
            "since" => {
                p.since = Some(v.trim().parse().map_err(|_| {
                    ApiError::unprocessable(format!(
                        "since must be a revision (a non-negative integer), got {v:?}"
                    ))
                })?)
            }
            "watch" => {
                p.watch = match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(ApiError::unprocessable(format!(
                            "watch must be true or false, got {v:?}"
                        )));
                    }
                }
            }
            "timeout" => {
                let secs: f64 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        ApiError::unprocessable(format!(
                            "timeout must be a number of seconds, got {v:?}"
                        ))
                    })?;
                p.timeout = Some(Duration::from_secs_f64(secs).min(config.max_watch_timeout));
            }
            _ => {}
        }
    }
    if p.watch && p.since.is_none() {
        return Err(ApiError::unprocessable(
            "watch=true needs since=<revision> (list first, then watch from the list's revision)",
        ));
    }
    Ok(p)
}

pub(crate) async fn h_list(State(s): St, RawQuery(raw): RawQuery) -> ApiResult {
    let p = parse_list_params(raw.as_deref(), &s.config)?;
    if let Some(since) = p.since {
        return feed(&s, since, p.watch, p.timeout).await;
    }
    // The revision is read before the list, so a watch from it misses nothing the list lacks.
    let revision = s.backend.current_revision().await?;
    let q = p.query;
    let rows = s.backend.list(&q).await?;
    let total = if q.limit.is_some() || q.offset.is_some() {
        s.backend
            .count_where(q.status.as_ref(), q.filter_metadata.as_ref())
            .await?
    } else {
        rows.len() as u64
    };
    #[derive(serde::Serialize)]
    struct Page<'a> {
        items: &'a [Arc<Registration>],
        total: u64,
    }
    let mut resp = axum::Json(Page {
        items: &rows,
        total,
    })
    .into_response();
    resp.headers_mut()
        .insert(REVISION_HEADER, hv(&revision.to_string()));
    Ok(resp)
}

async fn feed(state: &AppState, since: u64, watch: bool, timeout: Option<Duration>) -> ApiResult {
    let deadline = tokio::time::Instant::now() + timeout.unwrap_or(state.config.watch_timeout);
    let mut changed = state.notifier.subscribe();
    let mut shutdown = state.notifier.shutdown_signal();
    let feed = loop {
        // Marks the notifier's value seen before reading, so a change after the read wakes us.
        changed.borrow_and_update();
        let feed = state.backend.changes_since(since).await?;
        let empty = matches!(&feed, ChangeFeed::Changes { changes, .. } if changes.is_empty());
        if !(watch && empty) || *shutdown.borrow() {
            break feed;
        }
        let poll = tokio::time::sleep(state.config.watch_poll_interval);
        tokio::select! {
            _ = changed.changed() => {}
            _ = poll => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break feed,
        }
        if tokio::time::Instant::now() >= deadline {
            break state.backend.changes_since(since).await?;
        }
    };
    let status = match feed {
        ChangeFeed::Changes { .. } => StatusCode::OK,
        ChangeFeed::Expired { .. } => StatusCode::GONE,
    };
    let mut resp = (status, axum::Json(feed_to_json(&feed))).into_response();
    resp.headers_mut()
        .insert(REVISION_HEADER, hv(&feed.current_revision().to_string()));
    Ok(resp)
}

/// No route: the original's `{"detail": "Not Found"}`.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

/// A route without this method: the original's `{"detail": "Method Not Allowed"}`.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

pub(crate) async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

pub(crate) async fn readyz(State(s): St) -> Response {
    match s.backend.current_revision().await {
        Ok(revision) => {
            axum::Json(json!({"status": "ready", "revision": revision})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"detail": format!("the registry backend is not ready: {e}")})),
            )
                .into_response()
        }
    }
}
