//! Embedding services over HTTP: OpenAI-compatible `POST /v1/embeddings` and Ollama
//! `POST /api/embed`.
//!
//! Invariants:
//! - Texts are sent in batches of `batch_size`, at most `concurrency` requests at a time; the
//!   result is in input order whatever order the batches finish in.
//! - A request that fails with 429 or a 5xx status (or cannot connect, or times out) is retried
//!   up to `max_retries` times with jittered exponential back-off (honouring a `Retry-After`
//!   of a few seconds); any other status fails at once with the status and the start of the
//!   body. A vector of the wrong width is an error naming both widths.
//! - The API key is sent as a bearer token and never printed (`Debug` shows `***`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{EmbedError, Embedder};

/// The wire protocol of an embedding service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpApi {
    /// `POST {base}/v1/embeddings` with `{"model", "input": [..]}` → `{"data": [{"embedding", "index"}]}`.
    OpenAi,
    /// `POST {base}/api/embed` with `{"model", "input": [..]}` → `{"embeddings": [[..]]}`.
    Ollama,
}

/// The options of an HTTP embedder (the original's keys: `embedding_model`, `dimensions`,
/// `api_base`, `api_key`).
#[derive(Clone)]
pub struct HttpEmbedderConfig {
    /// The protocol.
    pub api: HttpApi,
    /// The service's base URL (`http://127.0.0.1:11434`, `https://api.openai.com/v1`).
    pub api_base: String,
    /// The model name.
    pub model: String,
    /// The width of the vectors the model returns.
    pub dimensions: usize,
    /// Sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
    /// Texts per request (default 64).
    pub batch_size: usize,
    /// Requests in flight at once (default 4).
    pub concurrency: usize,
    /// Per-request timeout (default 30 s).
    pub timeout: Duration,
    /// Retries of a request that failed with 429/5xx or no answer (default 3).
    pub max_retries: u32,
    /// The first back-off (default 200 ms; doubled per retry, with jitter).
    pub backoff: Duration,
}

impl std::fmt::Debug for HttpEmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEmbedderConfig")
            .field("api", &self.api)
            .field("api_base", &self.api_base)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl HttpEmbedderConfig {
    /// Defaults for `api` at `api_base` with `model` of `dimensions`.
    pub fn new(
        api: HttpApi,
        api_base: impl Into<String>,
        model: impl Into<String>,
        dimensions: usize,
    ) -> Self {
        HttpEmbedderConfig {
            api,
            api_base: api_base.into(),
            model: model.into(),
            dimensions,
            api_key: None,
            batch_size: 64,
            concurrency: 4,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// An embedder backed by an HTTP embedding service.
#[derive(Debug, Clone)]
pub struct HttpEmbedder {
    config: Arc<HttpEmbedderConfig>,
    client: reqwest::Client,
    url: String,
    permits: Arc<Semaphore>,
}

impl HttpEmbedder {
    /// An embedder for `config` (no request is made yet).
    pub fn new(config: HttpEmbedderConfig) -> Result<Self, EmbedError> {
        if config.dimensions == 0 || config.batch_size == 0 || config.concurrency == 0 {
            return Err(EmbedError::Config(
                "dimensions, batch_size and concurrency must be positive".into(),
            ));
        }
        let base = config.api_base.trim_end_matches('/');
        let url = match config.api {
            HttpApi::OpenAi if base.ends_with("/v1") => format!("{base}/embeddings"),
            HttpApi::OpenAi => format!("{base}/v1/embeddings"),
            HttpApi::Ollama => format!("{base}/api/embed"),
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Config(format!("HTTP client: {e}")))?;
        let permits = Arc::new(Semaphore::new(config.concurrency));
        Ok(HttpEmbedder {
            config: Arc::new(config),
            client,
            url,
            permits,
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = json!({"model": self.config.model, "input": texts});
        let mut attempt = 0;
        loop {
            let mut req = self.client.post(&self.url).json(&body);
            if let Some(key) = &self.config.api_key {
                req = req.bearer_auth(key);
            }
            let (message, retry_after) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(10)));
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        return self.parse(&text, texts.len());
                    }
                    let message = format!(
                        "{} answered {status}: {}",
                        self.url,
                        text.chars().take(200).collect::<String>()
                    );
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(EmbedError::Service(message));
                    }
                    (message, retry_after)
                }
                Err(e) => (format!("{}: {e}", self.url), None),
            };
            if attempt >= self.config.max_retries {
                return Err(EmbedError::Service(format!(
                    "{message} (after {} retries)",
                    attempt
                )));
            }
            let base = self.config.backoff.saturating_mul(1 << attempt.min(10));
            let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
            tokio::time::sleep(retry_after.unwrap_or(base + jitter)).await;
            attempt += 1;
        }
    }

    fn parse(&self, text: &str, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bad = |what: &str| EmbedError::Service(format!("{} returned {what}", self.url));
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON ({e})")))?;
        let mut rows: Vec<(usize, &Value)> = match self.config.api {
            HttpApi::OpenAi => v["data"]
                .as_array()
                .ok_or_else(|| bad("no \"data\" list"))?
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (
                        d["index"].as_u64().map_or(i, |x| x as usize),
                        &d["embedding"],
                    )
                })
                .collect(),
            HttpApi::Ollama => v["embeddings"]
                .as_array()
                .ok_or_else(|| bad("no \"embeddings\" list"))?
                .iter()
                .enumerate()
                .collect(),
        };
        if rows.len() != expected {
            return Err(bad(&format!("{} vectors for {expected} texts", rows.len())));
        }
        rows.sort_by_key(|(i, _)| *i);
        rows.into_iter()
            .map(|(_, e)| {
                let list = e
                    .as_array()
                    .ok_or_else(|| bad("an embedding that is not a list"))?;
                if list.len() != self.config.dimensions {
                    return Err(EmbedError::Config(format!(
                        "model {} returned {}-dimensional vectors; dimensions is {}",
                        self.config.model,
                        list.len(),
                        self.config.dimensions
                    )));
                }
                list.iter()
                    .map(|x| {
                        x.as_f64()
                            .map(|f| f as f32)
                            .ok_or_else(|| bad("a non-number in an embedding"))
                    })
                    .collect()
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for HttpEmbedder {
    fn provider(&self) -> &'static str {
        match self.config.api {
            HttpApi::OpenAi => "openai",
            HttpApi::Ollama => "ollama",
        }
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batches = texts
            .chunks(self.config.batch_size)
            .map(|batch| async move {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| EmbedError::Service("embedder closed".into()))?;
                self.request(batch).await
            });
        let results = futures::future::try_join_all(batches).await?;
        Ok(results.into_iter().flatten().collect())
    }
}
