//! The knowledge routes (feature `knowledge`): knowledge bases and their files over HTTP,
//! ingestion and search. Invariants: uploads and downloads are streamed (any size, at most one
//! chunk in memory here); one ingest per knowledge base runs at a time (a second waits); search
//! answers from the RAG knowledge base the last ingest of this server filled (or, for a
//! persisted store, loaded); every error is `{"detail": ...}`, 404 for a missing knowledge base
//! or file, 409 for one that exists, 422 for an invalid id or path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dynreg_ingestion::{KnowledgeIngestionManager, ManagerError, RagKnowledgeBase, SwapMode};
use dynreg_knowledge_store::{
    KnowledgeBackend, KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::error::ApiError;

/// Builds the RAG knowledge base of a domain (its embedder and vector store), e.g. from an
/// environment's settings.
pub type RagFactory = Arc<
    dyn Fn(String) -> futures::future::BoxFuture<'static, Result<RagKnowledgeBase, String>>
        + Send
        + Sync,
>;

/// A domain's ingestion manager behind the lock that serialises its ingests.
type Managed = Arc<Mutex<Arc<KnowledgeIngestionManager>>>;

/// What the knowledge routes serve: a knowledge store, and how to build each domain's RAG
/// knowledge base.
#[derive(Clone)]
pub struct KnowledgeService {
    backend: Arc<dyn KnowledgeBackend>,
    rag: RagFactory,
    managers: Arc<Mutex<HashMap<String, Managed>>>,
}

impl std::fmt::Debug for KnowledgeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeService")
            .field("backend", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

impl KnowledgeService {
    /// Serves `backend`; `rag` builds a domain's RAG knowledge base on its first ingest or search.
    pub fn new(backend: Arc<dyn KnowledgeBackend>, rag: RagFactory) -> Self {
        KnowledgeService {
            backend,
            rag,
            managers: Arc::default(),
        }
    }

    /// The domain's manager (built once), behind the lock that serialises its ingests.
    async fn manager(
        &self,
        domain: &str,
    ) -> Result<Arc<Mutex<Arc<KnowledgeIngestionManager>>>, ApiError> {
        let mut all = self.managers.lock().await;
        if let Some(m) = all.get(domain) {
            return Ok(m.clone());
        }
        let rag = (self.rag)(domain.to_owned()).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot build the RAG knowledge base of {domain:?}: {e}"),
            )
        })?;
        let m = Arc::new(Mutex::new(Arc::new(KnowledgeIngestionManager::new(
            self.backend.clone(),
            rag,
        ))));
        all.insert(domain.to_owned(), m.clone());
        Ok(m)
    }
}

fn kerr(e: KnowledgeError) -> ApiError {
    let status = match &e {
        KnowledgeError::KbNotFound { .. } | KnowledgeError::FileNotFound { .. } => {
            StatusCode::NOT_FOUND
        }
        KnowledgeError::KbAlreadyExists { .. } => StatusCode::CONFLICT,
        e if e.is_refusal() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => {
            tracing::error!(error = %e, "knowledge backend error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

type K = State<KnowledgeService>;
type R = Result<Response, ApiError>;

async fn list_kbs(State(k): K) -> R {
    let kbs = k.backend.list_kbs().await.map_err(kerr)?;
    Ok(Json(json!({"items": kbs})).into_response())
}

async fn create_kb(State(k): K, body: axum::body::Bytes) -> R {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unprocessable(format!("the body is not valid JSON: {e}")))?;
    let domain = v
        .get("domain_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::unprocessable("Body must include 'domain_id'"))?;
    let metadata: Metadata = match v.get("metadata") {
        None | Some(Value::Null) => Metadata::default(),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| ApiError::unprocessable(format!("metadata: {e}")))?,
    };
    let info = k.backend.create_kb(domain, metadata).await.map_err(kerr)?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_kb(State(k): K, Path(domain): Path<String>) -> R {
    let info = k
        .backend
        .get_info(&domain)
        .await
        .map_err(kerr)?
        .ok_or_else(|| kerr(KnowledgeError::KbNotFound { domain_id: domain }))?;
    Ok(Json(info).into_response())
}

async fn delete_kb(State(k): K, Path(domain): Path<String>) -> R {
    if !k.backend.delete_kb(&domain).await.map_err(kerr)? {
        return Err(kerr(KnowledgeError::KbNotFound { domain_id: domain }));
    }
    k.managers.lock().await.remove(&domain);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_files(State(k): K, Path(domain): Path<String>) -> R {
    if k.backend.get_info(&domain).await.map_err(kerr)?.is_none() {
        return Err(kerr(KnowledgeError::KbNotFound { domain_id: domain }));
    }
    let files = k.backend.list_files(&domain, None).await.map_err(kerr)?;
    Ok(Json(json!({"items": files})).into_response())
}

async fn put_file(State(k): K, Path((domain, path)): Path<(String, String)>, body: Body) -> R {
    let (d, p) = (domain.clone(), path.clone());
    let stream = body
        .into_data_stream()
        .map_err(move |e| KnowledgeError::Io {
            domain_id: d.clone(),
            path: format!("{p} (the upload)"),
            source: std::io::Error::other(e.to_string()),
        })
        .boxed();
    let file = k
        .backend
        .put_stream(&domain, &path, stream, PutOptions::default())
        .await
        .map_err(kerr)?;
    Ok(Json(file).into_response())
}

async fn get_file(State(k): K, Path((domain, path)): Path<(String, String)>) -> R {
    let info = k
        .backend
        .get_file_info(&domain, &path)
        .await
        .map_err(kerr)?
        .ok_or_else(|| {
            kerr(KnowledgeError::FileNotFound {
                domain_id: domain.clone(),
                path: path.clone(),
            })
        })?;
    let stream = k
        .backend
        .stream_file(&domain, &path, 64 * 1024)
        .await
        .map_err(kerr)?
        .ok_or_else(|| {
            kerr(KnowledgeError::FileNotFound {
                domain_id: domain,
                path,
            })
        })?;
    let mut resp =
        Body::from_stream(stream.map_err(|e| std::io::Error::other(e.to_string()))).into_response();
    if let Ok(v) = info.content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

async fn delete_file(State(k): K, Path((domain, path)): Path<(String, String)>) -> R {
    if !k.backend.delete_file(&domain, &path).await.map_err(kerr)? {
        return Err(kerr(KnowledgeError::FileNotFound {
            domain_id: domain,
            path,
        }));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ingest(State(k): K, Path(domain): Path<String>, RawQuery(q): RawQuery) -> R {
    let mut full = false;
    let mut since = None;
    for (key, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match &*key {
            "full" => full = v == "true" || v == "1",
            "changes_since" => since = Some(v.into_owned()),
            _ => {}
        }
    }
    if full && since.is_some() {
        return Err(ApiError::unprocessable(
            "full and changes_since cannot be combined",
        ));
    }
    let manager = k.manager(&domain).await?;
    let manager = manager.lock().await;
    let result = match (since, full) {
        (Some(v), _) => {
            manager
                .ingest_changes(&domain, &v, SwapMode::Tombstone, Default::default())
                .await
        }
        (None, true) => manager.reingest_all(&domain, SwapMode::Tombstone).await,
        (None, false) => manager.ingest(&domain, SwapMode::Tombstone).await,
    };
    let result = result.map_err(|e| match e {
        ManagerError::Missing { domain } => kerr(KnowledgeError::KbNotFound { domain_id: domain }),
        ManagerError::Knowledge(e) => kerr(e),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    manager
        .destination()
        .flush()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(result.summary()).into_response())
}

async fn search(State(k): K, Path(domain): Path<String>, RawQuery(q): RawQuery) -> R {
    let mut text = None;
    let mut top_k = 5usize;
    for (key, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match &*key {
            "q" => text = Some(v.into_owned()),
            "k" => {
                top_k = v
                    .parse()
                    .ok()
                    .filter(|k| (1..=100).contains(k))
                    .ok_or_else(|| ApiError::unprocessable("k must be an integer from 1 to 100"))?
            }
            _ => {}
        }
    }
    let text = text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::unprocessable("query parameter 'q' is required"))?;
    if k.backend.get_info(&domain).await.map_err(kerr)?.is_none() {
        return Err(kerr(KnowledgeError::KbNotFound { domain_id: domain }));
    }
    let manager = k.manager(&domain).await?;
    let manager = manager.lock().await.clone();
    let hits = manager
        .destination()
        .search(&text, top_k)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let items: Vec<Value> = hits.iter().map(|h| h.summary()).collect();
    Ok(Json(json!({"items": items})).into_response())
}

/// The knowledge routes (mounted under the API prefix, behind the same tokens).
pub(crate) fn routes(service: KnowledgeService) -> Router {
    Router::new()
        .route("/knowledge", get(list_kbs).post(create_kb))
        .route("/knowledge/{domain}", get(get_kb).delete(delete_kb))
        .route("/knowledge/{domain}/files", get(list_files))
        .route(
            "/knowledge/{domain}/files/{*path}",
            get(get_file).put(put_file).delete(delete_file),
        )
        .route("/knowledge/{domain}/ingest", axum::routing::post(ingest))
        .route("/knowledge/{domain}/search", get(search))
        .with_state(service)
}
