//! `dynreg kb ...`: knowledge bases and their files, in the environment's knowledge store.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Subcommand;
use dynreg::knowledge::{
    KnowledgeBackend, KnowledgeBackendExt, KnowledgeBaseInfo, KnowledgeFile, Metadata, PutOptions,
};
use serde_json::{Value, json};

use crate::remote::Remote;
use crate::{Cli, env, out};

#[derive(Debug, Subcommand)]
pub(crate) enum KbCommand {
    /// Create a knowledge base.
    Create {
        /// The knowledge base (domain) id.
        domain: String,
    },
    /// List knowledge bases.
    Ls,
    /// Delete a knowledge base and its files.
    Rm {
        /// The knowledge base id.
        domain: String,
    },
    /// Upload files; a folder uploads every file below it (paths relative to the folder).
    Put {
        /// The knowledge base id.
        domain: String,
        /// Files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Store under this folder of the knowledge base.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// List the files of a knowledge base.
    Files {
        /// The knowledge base id.
        domain: String,
    },
    /// Download one file (to stdout, or to `--output`).
    Get {
        /// The knowledge base id.
        domain: String,
        /// The file's path in the knowledge base.
        path: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Every file below `root` (sorted), with its path relative to `root` in `/` form.
fn walk(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .expect("below the root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn print_created(cli: &Cli, info: &KnowledgeBaseInfo) -> Result<()> {
    if cli.json {
        out::json(&serde_json::to_value(info)?);
    } else {
        out::line(format!("created knowledge base {}", info.domain_id));
    }
    Ok(())
}

fn print_kbs(cli: &Cli, kbs: &[KnowledgeBaseInfo]) -> Result<()> {
    if cli.json {
        out::json(&serde_json::to_value(kbs)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = kbs
        .iter()
        .map(|i| {
            vec![
                i.domain_id.clone(),
                i.file_count.to_string(),
                i.total_size_bytes.to_string(),
                i.version.clone(),
                format!("{:?}", i.ingestion_status).to_lowercase(),
            ]
        })
        .collect();
    out::table(&["KB", "FILES", "BYTES", "VERSION", "STATUS"], &rows);
    Ok(())
}

fn print_files<F: std::ops::Deref<Target = KnowledgeFile>>(cli: &Cli, files: &[F]) -> Result<()> {
    if cli.json {
        out::json(&Value::Array(
            files
                .iter()
                .map(|f| serde_json::to_value(&**f).unwrap_or(Value::Null))
                .collect(),
        ));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                f.path.clone(),
                f.size_bytes.to_string(),
                f.content_type.clone(),
                f.checksum.clone(),
            ]
        })
        .collect();
    out::table(&["PATH", "BYTES", "TYPE", "MD5"], &rows);
    Ok(())
}

fn write_out(bytes: &[u8], output: &Option<PathBuf>) -> Result<()> {
    match output {
        Some(file) => {
            std::fs::write(file, bytes).with_context(|| format!("cannot write {}", file.display()))
        }
        None => Ok(std::io::stdout().lock().write_all(bytes)?),
    }
}

/// Where uploads come from: every file named, folders walked.
fn collect(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            files.extend(walk(p)?);
        } else {
            let name = p
                .file_name()
                .with_context(|| format!("{} has no file name", p.display()))?
                .to_string_lossy()
                .into_owned();
            files.push((p.clone(), name));
        }
    }
    Ok(files)
}

async fn run_remote(cli: &Cli, remote: &Remote, cmd: &KbCommand) -> Result<()> {
    match cmd {
        KbCommand::Create { domain } => print_created(cli, &remote.create(domain).await?)?,
        KbCommand::Ls => print_kbs(cli, &remote.list().await?)?,
        KbCommand::Rm { domain } => {
            remote.delete(domain).await?;
            out::line(format!("deleted knowledge base {domain}"));
        }
        KbCommand::Put {
            domain,
            paths,
            prefix,
        } => put(cli, Store::Remote(remote), domain, paths, prefix).await?,
        KbCommand::Files { domain } => {
            print_files(cli, &remote.files(domain).await?.iter().collect::<Vec<_>>())?
        }
        KbCommand::Get {
            domain,
            path,
            output,
        } => write_out(&remote.get(domain, path).await?, output)?,
    }
    Ok(())
}

pub(crate) async fn run(cli: &Cli, cmd: &KbCommand) -> Result<()> {
    if let Some(remote) = Remote::of(cli)? {
        return run_remote(cli, &remote, cmd).await;
    }
    let kb = env::knowledge(cli).await?;
    match cmd {
        KbCommand::Create { domain } => {
            print_created(cli, &kb.create_kb(domain, Metadata::default()).await?)?;
        }
        KbCommand::Ls => print_kbs(cli, &kb.list_kbs().await?)?,
        KbCommand::Rm { domain } => {
            if !kb.delete_kb(domain).await? {
                bail!("knowledge base {domain:?} not found");
            }
            out::line(format!("deleted knowledge base {domain}"));
        }
        KbCommand::Put {
            domain,
            paths,
            prefix,
        } => put(cli, Store::Local(kb.as_ref()), domain, paths, prefix).await?,
        KbCommand::Files { domain } => {
            if kb.get_info(domain).await?.is_none() {
                bail!("knowledge base {domain:?} not found");
            }
            print_files(cli, &kb.list_files(domain, None).await?)?;
        }
        KbCommand::Get {
            domain,
            path,
            output,
        } => {
            let bytes = kb
                .get_file(domain, path)
                .await?
                .with_context(|| format!("{domain}/{path} not found"))?;
            write_out(&bytes, output)?;
        }
    }
    Ok(())
}

/// Where `put` uploads to.
enum Store<'a> {
    Local(&'a dyn KnowledgeBackend),
    Remote(&'a Remote),
}

impl Store<'_> {
    async fn upload(&self, domain: &str, key: &str, bytes: Vec<u8>) -> Result<KnowledgeFile> {
        match self {
            Store::Local(kb) => Ok(kb
                .put_file(domain, key, Bytes::from(bytes), PutOptions::default())
                .await?),
            Store::Remote(remote) => remote.put(domain, key, bytes).await,
        }
    }
}

async fn put(
    cli: &Cli,
    store: Store<'_>,
    domain: &str,
    paths: &[PathBuf],
    prefix: &str,
) -> Result<()> {
    let files = collect(paths)?;
    let prefix = prefix.trim_matches('/');
    let mut stored = Vec::new();
    // A bar for many or large uploads, on a terminal only (never in a pipe or a log).
    let total: u64 = files
        .iter()
        .map(|(f, _)| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && (files.len() > 20 || total > 64 * 1024 * 1024)
    {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    for (file, rel) in &files {
        let key = if prefix.is_empty() {
            rel.clone()
        } else {
            format!("{prefix}/{rel}")
        };
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let f = store
            .upload(domain, &key, bytes)
            .await
            .with_context(|| format!("cannot upload {} as {domain}/{key}", file.display()))?;
        match &bar {
            Some(bar) => {
                bar.inc(f.size_bytes);
                bar.set_message(f.path.clone());
            }
            None if !cli.json => out::line(format!("{}  {} bytes", f.path, f.size_bytes)),
            None => {}
        }
        stored.push(json!({"path": f.path, "size_bytes": f.size_bytes, "checksum": f.checksum}));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if cli.json {
        out::json(&Value::Array(stored));
    } else {
        out::line(format!("uploaded {} file(s) to {domain}", files.len()));
    }
    Ok(())
}
