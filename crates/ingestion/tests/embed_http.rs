//! The HTTP embedder against a mock embedding service in this process (127.0.0.1, an
//! ephemeral port): OpenAI and Ollama shapes, batching and order, the concurrency limit,
//! retries on 429/5xx only, timeouts, the key kept out of `Debug`, width checks, and a RAG
//! knowledge base configured with the original's keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use dynreg_ingestion::embed::{HttpApi, HttpEmbedder, HttpEmbedderConfig};
use dynreg_ingestion::{EmbedError, Embedder, PipelineOptions, RagKnowledgeBase};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    auth: Option<String>,
    body: Value,
}

type Handler = Arc<dyn Fn(usize, &Seen) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight_max: Arc<AtomicUsize>,
}

/// A vector for `text` of width `dims`: [chars, first byte, 1, 0, ...].
fn vector_for(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[0] = text.chars().count() as f32;
    v[1] = f32::from(text.bytes().next().unwrap_or(0));
    v[2] = 1.0;
    v
}

async fn mock(handler: Handler, delay: Duration) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight_max = Arc::new(AtomicUsize::new(0));
    let (s, f, m) = (seen.clone(), in_flight.clone(), in_flight_max.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (seen, handler, in_flight, in_flight_max) =
                (s.clone(), handler.clone(), f.clone(), m.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let auth = head
                    .lines()
                    .find(|l| l.to_lowercase().starts_with("authorization:"))
                    .map(|l| l["authorization:".len()..].trim().to_owned());
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                let req = Seen { path, auth, body };
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push(req.clone());
                    s.len() - 1
                };
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                in_flight_max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let (status, headers, body) = handler(n, &req);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Mock {
        base,
        seen,
        in_flight_max,
    }
}

/// An OpenAI-style answer for the request, its `data` in reverse order (with indexes).
fn openai_answer(req: &Seen, dims: usize) -> String {
    let input = req.body["input"].as_array().cloned().unwrap_or_default();
    let mut data: Vec<Value> = input
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"index": i, "embedding": vector_for(t.as_str().unwrap_or(""), dims)}))
        .collect();
    data.reverse();
    json!({"data": data, "model": req.body["model"]}).to_string()
}

fn config(api: HttpApi, base: &str, dims: usize) -> HttpEmbedderConfig {
    let mut c = HttpEmbedderConfig::new(api, base, "test-model", dims);
    c.backoff = Duration::from_millis(5);
    c
}

#[tokio::test]
async fn openai_batches_keep_order_and_respect_the_concurrency_limit() {
    let m = mock(
        Arc::new(|_, req| (200, vec![], openai_answer(req, 4))),
        Duration::from_millis(30),
    )
    .await;
    let mut c = config(HttpApi::OpenAi, &format!("{}/v1", m.base), 4);
    c.batch_size = 16;
    c.concurrency = 2;
    c.api_key = Some("sk-secret-value".into());
    assert!(!format!("{c:?}").contains("sk-secret-value"));
    let e = HttpEmbedder::new(c).unwrap();
    assert_eq!(e.url(), format!("{}/v1/embeddings", m.base));
    let texts: Vec<String> = (0..50)
        .map(|i| format!("{}text {i}", "x".repeat(i)))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = e.embed(&refs).await.unwrap();
    assert_eq!(vectors.len(), 50);
    for (t, v) in texts.iter().zip(&vectors) {
        assert_eq!(v, &vector_for(t, 4));
    }
    let seen = m.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter()
            .all(|s| s.path == "/v1/embeddings" && s.body["model"] == json!("test-model"))
    );
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some("Bearer sk-secret-value"))
    );
    assert_eq!(m.in_flight_max.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_429_and_5xx_only() {
    // 503, 429 (Retry-After: 0), then success.
    let m = mock(
        Arc::new(|n, req| match n {
            0 => (503, vec![], "{\"error\": \"busy\"}".into()),
            1 => (429, vec![("retry-after".into(), "0".into())], "{}".into()),
            _ => (200, vec![], openai_answer(req, 3)),
        }),
        Duration::ZERO,
    )
    .await;
    let e = HttpEmbedder::new(config(HttpApi::OpenAi, &m.base, 3)).unwrap();
    assert_eq!(
        e.embed(&["hello"]).await.unwrap()[0],
        vector_for("hello", 3)
    );
    assert_eq!(m.seen.lock().unwrap().len(), 3);

    let m = mock(
        Arc::new(|_, _| (400, vec![], "{\"error\": \"bad model name\"}".into())),
        Duration::ZERO,
    )
    .await;
    let e = HttpEmbedder::new(config(HttpApi::OpenAi, &m.base, 3)).unwrap();
    let err = e.embed(&["hello"]).await.unwrap_err().to_string();
    assert!(
        err.contains("400") && err.contains("bad model name"),
        "{err}"
    );
    assert_eq!(m.seen.lock().unwrap().len(), 1, "a 400 is not retried");

    let m = mock(Arc::new(|_, _| (500, vec![], "{}".into())), Duration::ZERO).await;
    let e = HttpEmbedder::new(config(HttpApi::OpenAi, &m.base, 3)).unwrap();
    let err = e.embed(&["hello"]).await.unwrap_err().to_string();
    assert!(
        err.contains("500") && err.contains("after 3 retries"),
        "{err}"
    );
    assert_eq!(m.seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_slow_service_times_out_and_a_wrong_width_is_named() {
    let m = mock(
        Arc::new(|_, req| (200, vec![], openai_answer(req, 3))),
        Duration::from_millis(500),
    )
    .await;
    let mut c = config(HttpApi::OpenAi, &m.base, 3);
    c.timeout = Duration::from_millis(100);
    c.max_retries = 1;
    let err = HttpEmbedder::new(c)
        .unwrap()
        .embed(&["x"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, EmbedError::Service(_)) && err.to_string().contains("after 1 retries"),
        "{err}"
    );

    let m = mock(
        Arc::new(|_, req| (200, vec![], openai_answer(req, 5))),
        Duration::ZERO,
    )
    .await;
    let err = HttpEmbedder::new(config(HttpApi::OpenAi, &m.base, 3))
        .unwrap()
        .embed(&["x"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("5-dimensional") && err.to_string().contains("dimensions is 3"),
        "{err}"
    );
}

fn ollama_answer(req: &Seen, dims: usize) -> String {
    let input = req.body["input"].as_array().cloned().unwrap_or_default();
    let embeddings: Vec<Vec<f32>> = input
        .iter()
        .map(|t| vector_for(t.as_str().unwrap_or(""), dims))
        .collect();
    json!({"model": req.body["model"], "embeddings": embeddings}).to_string()
}

#[tokio::test]
async fn a_rag_knowledge_base_on_ollama_with_the_original_keys() {
    use dynreg_knowledge_store::{
        KnowledgeBackend, KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
    };
    let m = mock(
        Arc::new(|_, req| (200, vec![], ollama_answer(req, 8))),
        Duration::ZERO,
    )
    .await;
    let kb = RagKnowledgeBase::from_config(&json!({
        "embedding_provider": "ollama",
        "embedding_model": "nomic-embed-text",
        "embedding_base_url": m.base,
        "dimensions": 8,
        "vector_store": {"backend": "memory", "dimensions": 8}
    }))
    .await
    .unwrap();
    assert_eq!(kb.embedder().provider(), "ollama");
    let backend: Arc<dyn KnowledgeBackend> = Arc::new(MemoryKnowledgeBackend::new());
    backend.create_kb("d", Metadata::new()).await.unwrap();
    backend
        .put_file(
            "d",
            "a.md",
            "# A\n\nalpha text\n".to_owned().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let stats = kb
        .ingest_from_backend(backend, "d", PipelineOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.chunks_stored, 1);
    let seen = m.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/api/embed");
    assert_eq!(seen[0].body["model"], json!("nomic-embed-text"));
    let e =
        RagKnowledgeBase::from_config(&json!({"embedding_provider": "openai", "dimensions": 8}))
            .await
            .unwrap_err()
            .to_string();
    assert!(e.contains("embedding_model"), "{e}");
}
