//! The knowledge routes: streamed upload and download, hostile paths, tokens, ingest and search.

mod support;

use std::sync::Arc;

use dynreg_ingestion::RagKnowledgeBase;
use dynreg_knowledge_store::MemoryKnowledgeBackend;
use dynreg_registry_core::InMemoryBackend;
use dynreg_server::{KnowledgeService, RagFactory, RegistryServer, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_bases_over_http() {
    let factory: RagFactory = Arc::new(|domain: String| {
        Box::pin(async move {
            RagKnowledgeBase::from_config(&json!({"embedding_provider": "hash"}))
                .await
                .map(|r| r.with_domain(domain))
                .map_err(|e| e.to_string())
        })
    });
    let server = RegistryServer::new(Arc::new(InMemoryBackend::new()))
        .with_config(ServerConfig::default().read_token("r").write_token("w"))
        .unwrap()
        .with_knowledge(KnowledgeService::new(
            Arc::new(MemoryKnowledgeBackend::new()),
            factory,
        ));
    let s = support::serve_server(server).await;
    let c = reqwest::Client::new();
    let base = format!("{}/knowledge", s.base());
    let w = |r: reqwest::RequestBuilder| r.bearer_auth("w");
    let rd = |r: reqwest::RequestBuilder| r.bearer_auth("r");
    assert_eq!(
        w(c.post(&base))
            .json(&json!({"domain_id": "kb"}))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        w(c.post(&base))
            .json(&json!({"domain_id": "kb"}))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        rd(c.post(&base))
            .json(&json!({"domain_id": "x"}))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(c.get(&base).send().await.unwrap().status(), 401);
    // A 3 MiB upload, streamed in and out.
    let big = "# Big\n\n".to_owned() + &"lorem ipsum dolor sit amet ".repeat(120_000);
    let r = w(c.put(format!("{base}/kb/files/docs/big.md")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["size_bytes"], big.len());
    let r = rd(c.get(format!("{base}/kb/files/docs/big.md")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/markdown");
    assert_eq!(r.text().await.unwrap(), big);
    w(c.put(format!("{base}/kb/files/refunds.md")))
        .body("# Refunds\n\nRefunds are issued within 14 days.\n")
        .send()
        .await
        .unwrap();
    // Hostile paths and missing things.
    for path in ["..%2Fescape.md", "a%2F..%2Fb.md", "%00.md"] {
        let r = w(c.put(format!("{base}/kb/files/{path}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(
            matches!(
                r.status(),
                StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
            ),
            "{path}: {}",
            r.status()
        );
    }
    assert_eq!(
        rd(c.get(format!("{base}/kb/files/nope.md")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        rd(c.get(format!("{base}/nope/files")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let files: Value = rd(c.get(format!("{base}/kb/files")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(files["items"].as_array().unwrap().len(), 2);
    // Ingest, then search.
    let summary: Value = w(c.post(format!("{base}/kb/ingest")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["files_processed"], 2);
    assert_eq!(
        w(c.post(format!("{base}/kb/ingest?full=true&changes_since=x")))
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    let hits: Value = rd(c.get(format!(
        "{base}/kb/search?q=when%20are%20refunds%20issued&k=1"
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(hits["items"][0]["source"], "memory://kb/refunds.md");
    assert_eq!(
        rd(c.get(format!("{base}/kb/search")))
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        rd(c.get(format!("{base}/kb/search?q=x&k=1000")))
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        w(c.delete(format!("{base}/kb/files/refunds.md")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        w(c.delete(format!("{base}/kb")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        rd(c.get(format!("{base}/kb")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
