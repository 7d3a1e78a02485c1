//! Benchmarks of the knowledge store (plain timing loops, `cargo bench -p
//! dynreg-knowledge-store --all-features`): put rate of 4 KiB files from the 1st to the
//! 10,000th file on the file backend (per fsync policy), get_file rate, get_checksum (also the
//! first call after each of 20 writes) and list_files at 10,000 files, put rates with 1, 8 and
//! 32 concurrent writers (group commit), and peak RSS growth while putting and streaming a
//! large file.
//!
//! Environment: `KS_BENCH_FILES` (default 10000), `KS_BENCH_LARGE_MIB` (default 1024),
//! `KS_BENCH_POLICIES` (default `never,always`; the fsync policies to run the file series with).
//! The S3 backend's put series runs on `object_store`'s in-memory store with
//! `KS_BENCH_S3_MEM_FILES` (default 5000) files. With `DYNREG_TEST_S3_ENDPOINT` set, it also
//! runs against that S3 server with `KS_BENCH_S3_FILES` (default 1000) files, and so does the
//! large-file RSS measurement with `KS_BENCH_S3_MIB` (default 256) MiB.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use dynreg_knowledge_store::{
    ByteStream, FileConfig, FileKnowledgeBackend, FileUpload, FsyncPolicy, KnowledgeBackend,
    KnowledgeBackendExt, MemoryKnowledgeBackend, Metadata, PutOptions,
};
use futures::StreamExt;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples VmRSS every millisecond; returns the peak seen while `f` runs (KiB).
async fn peak_rss_during<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<(u64, u64)> {
    let before = status_kib("VmRSS:");
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let (p2, s2) = (peak.clone(), stop.clone());
    let sampler = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            p2.fetch_max(status_kib("VmRSS:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    f.await?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    peak.fetch_max(status_kib("VmRSS:"), Ordering::Relaxed);
    Ok((before, peak.load(Ordering::Relaxed)))
}

async fn put_series(label: &str, b: &dyn KnowledgeBackend, files: usize) -> Result<()> {
    b.create_kb("bench", Metadata::new()).await?;
    let body = Bytes::from(vec![b'x'; 4096]);
    let mut block_start = Instant::now();
    let total = Instant::now();
    let block = (files / 10).max(1);
    println!("  {label}: puts of 4 KiB files, per block of {block}:");
    let mut first_100 = Duration::ZERO;
    let mut last_100 = Duration::ZERO;
    for i in 0..files {
        let t = Instant::now();
        b.put_file(
            "bench",
            &format!("docs/{:02}/f{i:05}.md", i % 64),
            body.clone(),
            PutOptions::default(),
        )
        .await?;
        let dt = t.elapsed();
        if i < 100 {
            first_100 += dt;
        }
        if i + 100 >= files {
            last_100 += dt;
        }
        if (i + 1) % block == 0 {
            let el = block_start.elapsed();
            println!(
                "    files {:>5}..{:>5}: {:>8.0} puts/s",
                i + 1 - block,
                i + 1,
                block as f64 / el.as_secs_f64()
            );
            block_start = Instant::now();
        }
    }
    println!(
        "    overall {:.0} puts/s; first 100: {:.3} ms/put; last 100: {:.3} ms/put",
        files as f64 / total.elapsed().as_secs_f64(),
        first_100.as_secs_f64() * 1000.0 / 100.0,
        last_100.as_secs_f64() * 1000.0 / 100.0
    );
    Ok(())
}

async fn reads(label: &str, b: &dyn KnowledgeBackend, files: usize) -> Result<()> {
    let n = 20_000;
    let t = Instant::now();
    for k in 0..n {
        let i = (k * 7919) % files;
        let got = b
            .get_file("bench", &format!("docs/{:02}/f{i:05}.md", i % 64))
            .await?;
        assert!(got.is_some());
    }
    println!(
        "  {label}: get_file {:.0}/s (one task)",
        n as f64 / t.elapsed().as_secs_f64()
    );
    for round in ["first (writes the snapshot)", "repeat"] {
        let t = Instant::now();
        let id = b.get_checksum("bench").await?;
        println!(
            "  {label}: get_checksum at {files} files, {round}: {:.2} ms ({id})",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    // The first call after each of 20 single-file writes (the identity and its snapshot are
    // recomputed every time): median and worst.
    let body = Bytes::from(vec![b'w'; 4096]);
    let mut after_write = Vec::new();
    for k in 0..20 {
        let i = (k * 7919 + 13) % files;
        b.put_file(
            "bench",
            &format!("docs/{:02}/f{i:05}.md", i % 64),
            body.clone(),
            PutOptions::default(),
        )
        .await?;
        let t = Instant::now();
        b.get_checksum("bench").await?;
        after_write.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    after_write.sort_by(f64::total_cmp);
    println!(
        "  {label}: get_checksum at {files} files, first call after a put (20 puts): median {:.2} ms, worst {:.2} ms",
        after_write[after_write.len() / 2],
        after_write[after_write.len() - 1]
    );
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let all = b.list_files("bench", None).await?;
        assert_eq!(all.len(), files);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  {label}: list_files at {files} files: best {:.2} ms, median {:.2} ms, worst {:.2} ms (9 calls)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let t = Instant::now();
    let cs = b.list_changes_since("bench", "").await?;
    println!(
        "  {label}: list_changes_since(\"\") at {files} files: {:.2} ms ({} added)",
        t.elapsed().as_secs_f64() * 1000.0,
        cs.added.len()
    );
    Ok(())
}

async fn parallel_reads(label: &str, b: Arc<dyn KnowledgeBackend>, files: usize) -> Result<()> {
    let n = 40_000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..n / 8 {
                let i = (k * 7919 + w * 131) % files;
                let got = b
                    .get_file("bench", &format!("docs/{:02}/f{i:05}.md", i % 64))
                    .await?;
                assert!(got.is_some());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "  {label}: get_file {:.0}/s (8 tasks)",
        n as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn cold_reads(label: &str, b: &dyn KnowledgeBackend, files: usize) -> Result<()> {
    let t = Instant::now();
    let id = b.get_checksum("bench").await?;
    println!(
        "  {label}: get_checksum at {files} files on a fresh instance (loads index + journal): {:.2} ms ({id})",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let all = b.list_files("bench", None).await?;
    println!(
        "  {label}: list_files at {} files, right after: {:.2} ms",
        all.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn batch(label: &str, b: &dyn KnowledgeBackend, files: usize) -> Result<()> {
    b.create_kb("batch", Metadata::new()).await?;
    let body = Bytes::from(vec![b'y'; 4096]);
    let t = Instant::now();
    for chunk in 0..files / 100 {
        let uploads = (0..100)
            .map(|k| FileUpload::new(format!("b/{chunk:04}/{k:03}.md"), body.clone()))
            .collect();
        b.put_files("batch", uploads).await?;
    }
    println!(
        "  {label}: put_files in batches of 100: {:.0} files/s",
        (files / 100 * 100) as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `writers` tasks each putting `per_writer` 4 KiB files into one knowledge base.
async fn concurrent(
    label: &str,
    b: Arc<dyn KnowledgeBackend>,
    writers: usize,
    per_writer: usize,
) -> Result<()> {
    let kb = format!("conc{writers}");
    b.create_kb(&kb, Metadata::new()).await?;
    let body = Bytes::from(vec![b'z'; 4096]);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (b, body, kb) = (b.clone(), body.clone(), kb.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                b.put_file(
                    &kb,
                    &format!("w{w}/f{i:05}.md"),
                    body.clone(),
                    PutOptions::default(),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let n = writers * per_writer;
    assert_eq!(b.list_files(&kb, None).await?.len(), n);
    println!(
        "  {label}: {writers:>2} concurrent put_file writers: {:.0} puts/s ({n} puts)",
        n as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn large_stream(mib: usize) -> ByteStream {
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    futures::stream::iter((0..mib).map(move |_| Ok(chunk.clone()))).boxed()
}

async fn large(label: &str, b: &dyn KnowledgeBackend, mib: usize) -> Result<()> {
    b.create_kb("large", Metadata::new()).await?;
    let t = Instant::now();
    let (before, peak) = peak_rss_during(async {
        let f = b
            .put_stream("large", "big.bin", large_stream(mib), PutOptions::default())
            .await?;
        assert_eq!(f.size_bytes, (mib as u64) << 20);
        Ok(())
    })
    .await?;
    println!(
        "  {label}: put_stream of {mib} MiB: {:.1} s, RSS {} -> peak {} KiB: growth {:.1} MiB (VmHWM {} KiB)",
        t.elapsed().as_secs_f64(),
        before,
        peak,
        peak.saturating_sub(before) as f64 / 1024.0,
        status_kib("VmHWM:")
    );
    let t = Instant::now();
    let (before, peak) = peak_rss_during(async {
        let mut s = b
            .stream_file("large", "big.bin", 64 * 1024)
            .await?
            .expect("stream");
        let mut total = 0u64;
        while let Some(c) = s.next().await {
            total += c?.len() as u64;
        }
        assert_eq!(total, (mib as u64) << 20);
        Ok(())
    })
    .await?;
    println!(
        "  {label}: stream_file of {mib} MiB (64 KiB chunks): {:.1} s, RSS {} -> peak {} KiB: growth {:.1} MiB",
        t.elapsed().as_secs_f64(),
        before,
        peak,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let files = env_usize("KS_BENCH_FILES", 10_000);
    let large_mib = env_usize("KS_BENCH_LARGE_MIB", 1024);
    println!("knowledge-store benchmark ({files} files, large file {large_mib} MiB)");

    let policies = std::env::var("KS_BENCH_POLICIES").unwrap_or_else(|_| "never,always".into());
    for name in policies.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (policy, label) = match name {
            "always" => (FsyncPolicy::Always, "file, fsync=always"),
            _ => (FsyncPolicy::Never, "file, fsync=never"),
        };
        let dir = tempfile::tempdir()?;
        let mut cfg = FileConfig::new(dir.path());
        cfg.fsync = policy;
        let b = Arc::new(FileKnowledgeBackend::open(cfg).await?);
        put_series(label, &*b, files).await?;
        reads(label, &*b, files).await?;
        parallel_reads(label, b.clone(), files).await?;
        let mut cfg2 = FileConfig::new(dir.path());
        cfg2.fsync = policy;
        cold_reads(label, &FileKnowledgeBackend::open(cfg2).await?, files).await?;
        batch(label, &*b, files).await?;
        for writers in [1, 8, 32] {
            // fsync=always: about as many puts per writer count as the disk commits in ~2 s.
            let per_writer = match policy {
                FsyncPolicy::Always => 200,
                FsyncPolicy::Never => 2000 / writers,
            };
            concurrent(label, b.clone(), writers, per_writer).await?;
        }
    }

    let m = Arc::new(MemoryKnowledgeBackend::new());
    put_series("memory", &*m, files).await?;
    reads("memory", &*m, files).await?;
    parallel_reads("memory", m.clone(), files).await?;

    // Large-file memory behaviour, file backend (fsync=never: durability is not what is measured).
    let dir = tempfile::tempdir()?;
    let mut cfg = FileConfig::new(dir.path());
    cfg.fsync = FsyncPolicy::Never;
    let b = FileKnowledgeBackend::open(cfg).await?;
    large("file", &b, large_mib).await?;

    #[cfg(feature = "s3")]
    {
        let mem = dynreg_knowledge_store::S3KnowledgeBackend::with_store(
            Arc::new(object_store::memory::InMemory::new()),
            "mem",
            "bench/",
            64,
        );
        put_series(
            "s3 in-memory store",
            &mem,
            env_usize("KS_BENCH_S3_MEM_FILES", 5000),
        )
        .await?;
    }

    #[cfg(feature = "s3")]
    if let Ok(endpoint) = std::env::var("DYNREG_TEST_S3_ENDPOINT") {
        let mut cfg = dynreg_knowledge_store::S3Config::new(
            std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| "dynreg-test".into()),
        );
        cfg.endpoint_url = Some(endpoint);
        cfg.aws_access_key_id = Some("bench".into());
        cfg.aws_secret_access_key = Some("bench".into());
        cfg.prefix = format!("bench-{:08x}/", rand::random::<u32>());
        let s3 = dynreg_knowledge_store::S3KnowledgeBackend::connect(cfg).await?;
        put_series("s3 server", &s3, env_usize("KS_BENCH_S3_FILES", 1000)).await?;
        s3.delete_kb("bench").await?;
        large("s3", &s3, env_usize("KS_BENCH_S3_MIB", 256)).await?;
        s3.delete_kb("large").await?;
    }
    Ok(())
}
