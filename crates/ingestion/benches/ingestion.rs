//! Ingestion benchmarks (`cargo bench -p dynreg-ingestion`), one JSON line per figure:
//!
//! 1. chunking alone: 1,000 synthetic markdown files of ~4 KiB (headings, prose, lists, code —
//!    the shape the original's benchmark uses) chunked in memory; chunks/s.
//! 2. the whole pipeline over the same 1,000 files in the file knowledge backend: files/s and
//!    chunks/s (reading, config discovery, listing, chunking).
//! 3. a 20 MiB CSV (about 139k rows) from the file backend: seconds and peak RSS growth.
//! 4. a `.jsonl.gz` of `DYNREG_BENCH_JSONL_MIB` MiB decompressed (default 1024) from the file
//!    backend: seconds, MiB/s and peak RSS growth (constant memory: the file is streamed).
//!
//! Peak RSS growth is read from `/proc/self/status` (`VmHWM`) after resetting the peak
//! (`/proc/self/clear_refs`), so each figure is that workload's own.

#![allow(clippy::print_stdout, missing_docs)]

#[path = "../tests/support/synth.rs"]
mod synth;

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Map, json};

use synth::{Rng, WORDS, emit};

use dynreg_ingestion::{
    ChunkingConfig, Format, Limits, Pipeline, PipelineEvent, SourceFile, chunk_bytes,
};
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, FsyncPolicy, KnowledgeBackend, KnowledgeBackendExt, Metadata,
    PutOptions,
};

fn word(r: &mut Rng) -> &'static str {
    r.pick(WORDS)
}

fn sentence(r: &mut Rng, lo: u64, hi: u64) -> String {
    let n = r.range(lo, hi);
    let mut s = String::new();
    for i in 0..n {
        let w = word(r);
        if i == 0 {
            let mut c = w.chars();
            s.extend(c.next().map(|f| f.to_ascii_uppercase()));
            s.push_str(c.as_str());
        } else {
            s.push(' ');
            s.push_str(w);
        }
    }
    s.push('.');
    s
}

/// The same shape as the original benchmark's synthetic markdown.
fn synth_markdown(i: u64, target: usize) -> String {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (1000 + i));
    let mut parts = vec![
        format!("# Document {i}: {} {}\n", word(&mut r), word(&mut r)),
        format!("{} {}\n", sentence(&mut r, 8, 18), sentence(&mut r, 8, 18)),
    ];
    let mut s = 1;
    while parts.iter().map(|p| p.len() + 1).sum::<usize>() < target {
        parts.push(format!(
            "## Section {s}: {} {}\n",
            word(&mut r),
            word(&mut r)
        ));
        let n = r.range(2, 4);
        parts.push(
            (0..n)
                .map(|_| sentence(&mut r, 8, 18))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n",
        );
        match s % 3 {
            0 => {
                let n = r.range(3, 5);
                parts.push(
                    (0..n)
                        .map(|_| format!("- {}", sentence(&mut r, 3, 8)))
                        .collect::<Vec<_>>()
                        .join("\n")
                        + "\n",
                )
            }
            1 => {
                parts.push(format!("### Details {s}\n"));
                let n = r.range(2, 4);
                parts.push(
                    (0..n)
                        .map(|k| format!("{}. {}", k + 1, sentence(&mut r, 4, 9)))
                        .collect::<Vec<_>>()
                        .join("\n")
                        + "\n",
                );
            }
            _ => parts.push(format!(
                "```python\nx_0 = '{}'\nx_1 = '{}'\nx_2 = '{}'\n```\n",
                word(&mut r),
                word(&mut r),
                word(&mut r)
            )),
        }
        s += 1;
    }
    let text = parts.join("\n");
    let cut = &text[..target.min(text.len())];
    format!("{}\n", cut.rsplit_once(' ').map_or(cut, |(a, _)| a))
}

fn synth_csv(target: usize) -> (Vec<u8>, u64) {
    let mut r = Rng(7);
    let mut out = String::from("id,name,category,price,in_stock,description\n");
    let mut rows = 0;
    while out.len() < target {
        let n = r.range(12, 24);
        let desc = (0..n).map(|_| word(&mut r)).collect::<Vec<_>>().join(" ");
        let price = r.range(1, 99999) as f64 / 100.0;
        let stock = if r.next().is_multiple_of(2) {
            "true"
        } else {
            "false"
        };
        out.push_str(&format!(
            "{rows},item-{rows},{},{price},{stock},\"{desc}\"\n",
            word(&mut r)
        ));
        rows += 1;
    }
    (out.into_bytes(), rows)
}

fn peak_rss_reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn file_backend(dir: &std::path::Path) -> Arc<dyn KnowledgeBackend> {
    let mut config = FileConfig::new(dir);
    config.fsync = FsyncPolicy::Never;
    Arc::new(
        FileKnowledgeBackend::open(config)
            .await
            .expect("open file backend"),
    )
}

/// Runs a pipeline to the end; (files, chunks, errors).
async fn drain(p: &Pipeline, domain: &str) -> (u64, u64, u64) {
    let mut stream = p.stream(domain).await.expect("pipeline");
    let (mut files, mut chunks, mut errors) = (0, 0, 0);
    while let Some(event) = stream.next().await {
        match event {
            PipelineEvent::Chunks(b) => chunks += b.len() as u64,
            PipelineEvent::Done { .. } => files += 1,
            PipelineEvent::Error(e) => {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    (files, chunks, errors)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let rounds: usize = std::env::var("DYNREG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let docs: Vec<String> = (0..1000).map(|i| synth_markdown(i, 4096)).collect();
    let mean = docs.iter().map(String::len).sum::<usize>() / docs.len();

    // 1. Chunking alone.
    let cfg = ChunkingConfig::default();
    let limits = Limits::default();
    let mut rates = Vec::new();
    let mut total = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        total = 0;
        for (i, d) in docs.iter().enumerate() {
            let path = format!("guide/doc-{i:04}.md");
            let file = SourceFile {
                domain_id: "docs".into(),
                tenant_id: None,
                generation: None,
                source: format!("file://docs/{path}"),
                path,
                checksum: String::new(),
                size_bytes: d.len() as u64,
                format: Format::Markdown,
                gzip: false,
                metadata: Map::new(),
            };
            total += chunk_bytes(file, d.as_bytes(), &cfg, &limits)
                .expect("chunk")
                .len();
        }
        rates.push(total as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    emit(
        "ingestion",
        "chunk 1,000 markdown files (chunking alone)",
        rates[rates.len() / 2],
        "chunks/s",
        json!({"files": 1000, "mean_bytes": mean, "chunks": total, "best": rates[rates.len() - 1], "rounds": rounds}),
    );

    // 2. The whole pipeline from the file backend.
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = file_backend(dir.path()).await;
    backend
        .create_kb("docs", Metadata::new())
        .await
        .expect("create_kb");
    let uploads: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            dynreg_knowledge_store::FileUpload::new(
                format!("guide/doc-{i:04}.md"),
                d.clone().into_bytes(),
            )
        })
        .collect();
    backend.put_files("docs", uploads).await.expect("put_files");
    let pipeline = Pipeline::new(backend.clone());
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let (files, chunks, errors) = drain(&pipeline, "docs").await;
        assert_eq!((files, errors), (1000, 0));
        runs.push((t.elapsed().as_secs_f64(), chunks));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (secs, chunks) = runs[runs.len() / 2];
    emit(
        "ingestion",
        "pipeline 1,000 markdown files, file backend",
        1000.0 / secs,
        "files/s",
        json!({"chunks_per_s": chunks as f64 / secs, "chunks": chunks, "seconds": secs}),
    );

    // 3. A 20 MiB CSV.
    let (csv, rows) = synth_csv(20 << 20);
    let csv_len = csv.len();
    backend
        .create_kb("csv", Metadata::new())
        .await
        .expect("create_kb");
    backend
        .put_file("csv", "items.csv", csv.into(), PutOptions::default())
        .await
        .expect("put");
    let pipeline = Pipeline::new(backend.clone());
    let base = rss_kib("VmRSS:");
    peak_rss_reset();
    let t = Instant::now();
    let (files, chunks, errors) = drain(&pipeline, "csv").await;
    let secs = t.elapsed().as_secs_f64();
    let growth = rss_kib("VmHWM:").saturating_sub(base) as f64 / 1024.0;
    assert_eq!((files, errors), (1, 0));
    emit(
        "ingestion",
        "CSV 20 MiB",
        secs,
        "s",
        json!({"rows": rows, "bytes": csv_len, "chunks": chunks, "peak_rss_growth_mib": growth}),
    );

    // 4. A large .jsonl.gz, streamed.
    let mib: usize = std::env::var("DYNREG_BENCH_JSONL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut r = Rng(11);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut written = 0usize;
    let mut lines = 0u64;
    let mut line = String::new();
    while written < mib << 20 {
        line.clear();
        let n = r.range(10, 30);
        let body = (0..n).map(|_| word(&mut r)).collect::<Vec<_>>().join(" ");
        line.push_str(&format!("{{\"id\": {lines}, \"title\": \"record {lines}\", \"text\": \"{body}\", \"tags\": [\"{}\", \"{}\"]}}\n", word(&mut r), word(&mut r)));
        gz.write_all(line.as_bytes()).expect("gzip");
        written += line.len();
        lines += 1;
    }
    let compressed = gz.finish().expect("gzip");
    let compressed_len = compressed.len();
    backend
        .create_kb("logs", Metadata::new())
        .await
        .expect("create_kb");
    backend
        .put_file(
            "logs",
            "events.jsonl.gz",
            compressed.into(),
            PutOptions::default(),
        )
        .await
        .expect("put");
    let pipeline = Pipeline::new(backend.clone());
    let base = rss_kib("VmRSS:");
    peak_rss_reset();
    let t = Instant::now();
    let (files, chunks, errors) = drain(&pipeline, "logs").await;
    let secs = t.elapsed().as_secs_f64();
    let growth = rss_kib("VmHWM:").saturating_sub(base) as f64 / 1024.0;
    assert_eq!((files, errors, chunks), (1, 0, lines));
    emit(
        "ingestion",
        &format!("jsonl.gz {mib} MiB decompressed"),
        mib as f64 / secs,
        "MiB/s",
        json!({"seconds": secs, "lines": lines, "compressed_bytes": compressed_len, "chunks_per_s": chunks as f64 / secs, "peak_rss_growth_mib": growth}),
    );
}
