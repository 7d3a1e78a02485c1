//! `dynreg ingest` and `dynreg search`: a knowledge base's files → chunks → embeddings → the
//! vector store, and queries against it.
//!
//! The RAG configuration is the environment's `settings.rag` (the original's keys:
//! `embedding_provider`, `vector_store`, ...), by default the offline lexical `hash` embedder and
//! the exact in-memory store. An in-memory store is persisted to `--vectors-dir`
//! (`<dir>/<domain>.vectors`), so `search` in a later process finds what `ingest` stored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use dynreg::ingestion::{KnowledgeIngestionManager, RagKnowledgeBase, SwapMode};
use serde_json::{Value, json};

use crate::remote::Remote;
use crate::{Cli, env, out};

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// The knowledge base id.
    domain: String,
    /// Re-embed every file (by default unchanged files are kept).
    #[arg(long, conflicts_with = "changes_since")]
    full: bool,
    /// Only the changes after this knowledge-base version.
    #[arg(long, value_name = "VERSION")]
    changes_since: Option<String>,
    /// Where in-memory vector stores are persisted.
    #[arg(long, env = "DYNREG_VECTORS_DIR", default_value = "data/vectors")]
    vectors_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// The knowledge base id.
    domain: String,
    /// The query.
    query: String,
    /// How many results.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Where in-memory vector stores are persisted.
    #[arg(long, env = "DYNREG_VECTORS_DIR", default_value = "data/vectors")]
    vectors_dir: PathBuf,
}

/// The RAG knowledge base of `domain`, as the environment configures it.
async fn rag(cli: &Cli, domain: &str, vectors_dir: &Path) -> Result<RagKnowledgeBase> {
    let config = rag_config(cli)?;
    build(config, domain, vectors_dir).await
}

/// The environment's `settings.rag`, or the default (the `hash` embedder, an in-memory store).
pub(crate) fn rag_config(cli: &Cli) -> Result<Value> {
    let environment = env::environment(cli)?;
    Ok(match environment.setting("rag") {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(other) => anyhow::bail!("settings.rag must be a mapping, got {other}"),
        None => json!({"embedding_provider": "hash"}),
    })
}

/// The RAG knowledge base of `domain` from `config`; an in-memory store persists to
/// `<vectors_dir>/<domain>.vectors`.
pub(crate) async fn build(
    config: Value,
    domain: &str,
    vectors_dir: &Path,
) -> Result<RagKnowledgeBase> {
    let mut config = match config {
        Value::Object(m) => Value::Object(m),
        _ => json!({"embedding_provider": "hash"}),
    };
    let store = config
        .as_object_mut()
        .expect("an object")
        .entry("vector_store")
        .or_insert_with(|| json!({"backend": "memory"}));
    let memory = store
        .get("backend")
        .and_then(Value::as_str)
        .is_none_or(|b| b == "memory");
    if memory && store.get("persist_path").is_none() {
        std::fs::create_dir_all(vectors_dir)
            .with_context(|| format!("cannot create {}", vectors_dir.display()))?;
        store["persist_path"] = json!(vectors_dir.join(format!("{domain}.vectors")));
    }
    Ok(RagKnowledgeBase::from_config(&config)
        .await
        .context("invalid settings.rag")?
        .with_domain(domain))
}

pub(crate) async fn ingest(cli: &Cli, args: &IngestArgs) -> Result<()> {
    let summary = match Remote::of(cli)? {
        Some(remote) => {
            remote
                .ingest(&args.domain, args.full, args.changes_since.as_deref())
                .await?
        }
        None => {
            let source = env::knowledge(cli).await?;
            let destination = rag(cli, &args.domain, &args.vectors_dir).await?;
            let bar = progress_bar();
            let mut manager = KnowledgeIngestionManager::new(source, destination);
            if let Some(bar) = bar.clone() {
                manager = manager.with_progress(move |p| {
                    bar.set_length(p.files_total);
                    bar.set_position(p.files_done);
                    bar.set_message(format!("{} chunks  {}", p.chunks_stored, p.last_path));
                });
            }
            let result = match (&args.changes_since, args.full) {
                (Some(v), _) => {
                    manager
                        .ingest_changes(&args.domain, v, SwapMode::Tombstone, Default::default())
                        .await?
                }
                (None, true) => {
                    manager
                        .reingest_all(&args.domain, SwapMode::Tombstone)
                        .await?
                }
                (None, false) => manager.ingest(&args.domain, SwapMode::Tombstone).await?,
            };
            manager.destination().flush().await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            result.summary()
        }
    };
    let errors: Vec<String> = summary["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if cli.json {
        out::json(&summary);
    } else {
        let n = |k: &str| summary[k].as_u64().unwrap_or(0).to_string();
        out::table(
            &[
                "KB",
                "PROCESSED",
                "UNCHANGED",
                "DELETED",
                "SKIPPED",
                "CHUNKS",
                "ERRORS",
            ],
            &[vec![
                args.domain.clone(),
                n("files_processed"),
                n("files_unchanged"),
                n("files_deleted"),
                n("files_skipped"),
                n("chunks_created"),
                errors.len().to_string(),
            ]],
        );
        for e in &errors {
            out::line(format!("  {e}"));
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{} file(s) of {} could not be ingested",
            errors.len(),
            args.domain
        );
    }
    Ok(())
}

/// A bar of files ingested (with chunks, rate and ETA), on a terminal only: never drawn into a
/// pipe or a log.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} files  {per_sec}  eta {eta}  {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

pub(crate) async fn search(cli: &Cli, args: &SearchArgs) -> Result<()> {
    let hits: Vec<Value> = match Remote::of(cli)? {
        Some(remote) => remote
            .search(&args.domain, &args.query, args.k)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        None => {
            let kb = rag(cli, &args.domain, &args.vectors_dir).await?;
            kb.search(&args.query, args.k)
                .await?
                .iter()
                .map(|h| h.summary())
                .collect()
        }
    };
    if cli.json {
        out::json(&Value::Array(hits));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|h| {
            let text = h["text"].as_str().unwrap_or("");
            let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let snippet: String = snippet.chars().take(80).collect();
            vec![
                format!("{:.3}", h["similarity"].as_f64().unwrap_or(0.0)),
                h["source"].as_str().unwrap_or("").to_owned(),
                h["heading_path"].as_str().unwrap_or("").to_owned(),
                snippet,
            ]
        })
        .collect();
    out::table(&["SCORE", "SOURCE", "HEADINGS", "TEXT"], &rows);
    Ok(())
}
