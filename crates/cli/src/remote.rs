//! The knowledge commands through a dynreg server's knowledge routes (`--url`).

use anyhow::{Context, Result, bail};
use dynreg::knowledge::{KnowledgeBaseInfo, KnowledgeFile};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::Cli;

/// Everything but unreserved characters is encoded in one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) struct Remote {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Remote {
    /// The server of `--url`, if given.
    pub(crate) fn of(cli: &Cli) -> Result<Option<Remote>> {
        let Some(url) = &cli.url else {
            return Ok(None);
        };
        Ok(Some(Remote {
            base: format!("{}/api/v1/knowledge", url.trim_end_matches('/')),
            client: reqwest::Client::builder().build()?,
            token: cli.token.clone(),
        }))
    }

    fn url(&self, domain: Option<&str>, tail: &str) -> String {
        match domain {
            Some(d) => format!("{}/{}{tail}", self.base, utf8_percent_encode(d, SEGMENT)),
            None => self.base.clone(),
        }
    }

    /// `path` as a URL path: each segment encoded, the `/`s kept.
    pub(crate) fn file_url(&self, domain: &str, path: &str) -> String {
        let encoded: Vec<String> = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        self.url(Some(domain), &format!("/files/{}", encoded.join("/")))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.context("the server did not answer")?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("detail")
                    .map(|d| d.as_str().map_or(d.to_string(), str::to_owned))
            })
            .unwrap_or(text);
        bail!("the server answered {status}: {detail}")
    }

    pub(crate) async fn create(&self, domain: &str) -> Result<KnowledgeBaseInfo> {
        let r = self
            .send(
                self.client
                    .post(self.url(None, ""))
                    .json(&json!({"domain_id": domain})),
            )
            .await?;
        Ok(r.json().await?)
    }

    pub(crate) async fn list(&self) -> Result<Vec<KnowledgeBaseInfo>> {
        let v: Value = self
            .send(self.client.get(self.url(None, "")))
            .await?
            .json()
            .await?;
        Ok(serde_json::from_value(v["items"].clone())?)
    }

    pub(crate) async fn delete(&self, domain: &str) -> Result<()> {
        self.send(self.client.delete(self.url(Some(domain), "")))
            .await?;
        Ok(())
    }

    pub(crate) async fn files(&self, domain: &str) -> Result<Vec<KnowledgeFile>> {
        let v: Value = self
            .send(self.client.get(self.url(Some(domain), "/files")))
            .await?
            .json()
            .await?;
        Ok(serde_json::from_value(v["items"].clone())?)
    }

    pub(crate) async fn put(
        &self,
        domain: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<KnowledgeFile> {
        let r = self
            .send(self.client.put(self.file_url(domain, path)).body(bytes))
            .await?;
        Ok(r.json().await?)
    }

    pub(crate) async fn get(&self, domain: &str, path: &str) -> Result<bytes::Bytes> {
        Ok(self
            .send(self.client.get(self.file_url(domain, path)))
            .await?
            .bytes()
            .await?)
    }

    pub(crate) async fn ingest(
        &self,
        domain: &str,
        full: bool,
        changes_since: Option<&str>,
    ) -> Result<Value> {
        let mut request = self.client.post(self.url(Some(domain), "/ingest"));
        if full {
            request = request.query(&[("full", "true")]);
        }
        if let Some(v) = changes_since {
            request = request.query(&[("changes_since", v)]);
        }
        Ok(self.send(request).await?.json().await?)
    }

    pub(crate) async fn search(&self, domain: &str, q: &str, k: usize) -> Result<Value> {
        let v: Value = self
            .send(
                self.client
                    .get(self.url(Some(domain), "/search"))
                    .query(&[("q", q), ("k", &k.to_string())]),
            )
            .await?
            .json()
            .await?;
        Ok(v["items"].clone())
    }
}
