//! Crash safety of the file backend: a child process (this test binary, re-executed with an
//! environment variable) writes continuously and is killed with SIGKILL at random moments;
//! after each kill the store is reopened and must hold, for every path, a complete old or new
//! file whose bytes match the index, no unindexed content file, and no leftover temp files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use dynreg_knowledge_store::identity::md5_hex;
use dynreg_knowledge_store::{
    FileConfig, FileKnowledgeBackend, FileUpload, IngestionStatus, KnowledgeBackend,
    KnowledgeBackendExt, KnowledgeError, Metadata, PutOptions, StatusUpdate,
};

const CHILD_ENV: &str = "DYNREG_KS_CRASH_CHILD_DIR";
const TEST_NAME: &str = "killed_writer_leaves_old_or_new_file_and_a_matching_index";
const DOMAIN: &str = "crash";

/// A self-describing body: a header naming its generation and length, then derived bytes.
fn body(i: u64) -> Vec<u8> {
    let len = 16 * 1024 + (i * 7919 % 48) as usize * 4096;
    let mut out = format!("i={i};len={len}\n").into_bytes();
    out.extend((0..len).map(|k| ((k as u64 * 31 + i) % 251) as u8));
    out
}

fn check_body(path: &str, bytes: &[u8]) -> Result<()> {
    let nl = bytes.iter().position(|&b| b == b'\n').context("header")?;
    let header = std::str::from_utf8(&bytes[..nl])?;
    let (i, len) = header
        .strip_prefix("i=")
        .and_then(|h| h.split_once(";len="))
        .with_context(|| format!("{path}: header {header:?}"))?;
    let expected = body(i.parse()?);
    ensure!(
        len.parse::<usize>()? + nl + 1 == expected.len(),
        "{path}: length header"
    );
    ensure!(
        bytes == expected.as_slice(),
        "{path}: partial or mixed content"
    );
    Ok(())
}

async fn run_writer(dir: &str) -> Result<()> {
    let b = FileKnowledgeBackend::open(FileConfig::new(dir)).await?;
    match b.create_kb(DOMAIN, Metadata::new()).await {
        Ok(_) | Err(KnowledgeError::KbAlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let start: u64 = rand::random::<u32>().into();
    for i in start.. {
        let path = format!("docs/f{:02}.bin", i % 24);
        b.put_file(DOMAIN, &path, Bytes::from(body(i)), PutOptions::default())
            .await?;
        if i % 5 == 0 {
            let batch = (0..3)
                .map(|k| FileUpload::new(format!("batch/b{}.bin", (i + k) % 9), body(i + k)))
                .collect();
            b.put_files(DOMAIN, batch).await?;
        }
        if i % 7 == 0 {
            b.delete_file(DOMAIN, &format!("docs/f{:02}.bin", (i + 3) % 24))
                .await?;
        }
        if i % 11 == 0 {
            b.set_ingestion_status(DOMAIN, StatusUpdate::new(IngestionStatus::Ingesting))
                .await?;
        }
    }
    Ok(())
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            walk(&e.path(), root, out)?;
        } else {
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

async fn verify(dir: &Path) -> Result<usize> {
    let b = FileKnowledgeBackend::open(FileConfig::new(dir)).await?;
    let files = b.list_files(DOMAIN, None).await?;
    for f in &files {
        let bytes = b
            .get_file(DOMAIN, &f.path)
            .await?
            .with_context(|| format!("indexed {} has no content", f.path))?;
        ensure!(
            md5_hex(&bytes) == f.checksum,
            "{}: content does not match index",
            f.path
        );
        ensure!(bytes.len() as u64 == f.size_bytes, "{}: size", f.path);
        check_body(&f.path, &bytes)?;
    }
    let mut on_disk = Vec::new();
    walk(
        &dir.join(DOMAIN).join("content"),
        &dir.join(DOMAIN).join("content"),
        &mut on_disk,
    )?;
    on_disk.sort();
    let indexed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    ensure!(
        on_disk == indexed,
        "content on disk {on_disk:?} != index {indexed:?}"
    );
    b.compact(DOMAIN).await?;
    // No temp file of the dead writer survives.
    let tmp_root = dir.join(DOMAIN).join("_dynreg").join("tmp");
    if tmp_root.exists() {
        let mut leftovers = Vec::new();
        walk(&tmp_root, &tmp_root, &mut leftovers)?;
        ensure!(leftovers.is_empty(), "leftover temp files {leftovers:?}");
    }
    // _metadata.json (what the original reads) matches after compaction.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(DOMAIN).join("_metadata.json"))?)?;
    let mut meta_paths: Vec<String> = doc["files"]
        .as_object()
        .context("files")?
        .keys()
        .cloned()
        .collect();
    meta_paths.sort();
    ensure!(
        meta_paths == indexed,
        "_metadata.json disagrees with the index"
    );
    Ok(files.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_leaves_old_or_new_file_and_a_matching_index() -> Result<()> {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // Child role: write until killed.
        return run_writer(&dir).await;
    }
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut max_files = 0;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // Let it get going (the KB exists), then kill it at a random moment.
        let meta = dir.path().join(DOMAIN).join("_metadata.json");
        for _ in 0..200 {
            if meta.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = 50 + rand::random::<u64>() % 250 + round * 10;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err)?;
            }
            bail!("writer exited on its own ({status}): {err}");
        }
        child.kill()?;
        child.wait()?;
        let n = verify(dir.path())
            .await
            .with_context(|| format!("after kill in round {round}"))?;
        max_files = max_files.max(n);
    }
    ensure!(max_files > 0, "the writer never wrote anything");
    Ok(())
}
