//! `dynreg`: serve the registry over HTTP and manage bots and knowledge bases, against an
//! environment (`configs/environments/<name>.yaml`, default `development`: SQLite and files
//! under `./data`, no services) or, with `--url`, a running `dynreg serve`.
//!
//! Exit codes: 0 success, 1 a failed operation, 2 bad usage. An error is one line on stderr
//! (`-v` adds its causes); secrets in configs are never printed.

mod bots;
mod demo;
mod env;
mod kb;
mod out;
mod rag;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Dynamic registration for AI bots: the registry and the knowledge bases.
#[derive(Debug, Parser)]
#[command(name = "dynreg", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The environment: a file `<NAME>.yaml` of the environments folder.
    #[arg(long, global = true, env = "DYNREG_ENV", default_value = "development")]
    pub(crate) env: String,
    /// An environment file to use instead of `--env`.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The environments folder.
    #[arg(
        long,
        global = true,
        env = "DYNREG_CONFIG_DIR",
        default_value = "configs/environments",
        value_name = "DIR"
    )]
    pub(crate) config_dir: PathBuf,
    /// A dynreg server (`http://host:8080`): bot commands go through its HTTP API.
    #[arg(long, global = true, env = "DYNREG_URL")]
    pub(crate) url: Option<String>,
    /// The bearer token for `--url`.
    #[arg(long, global = true, env = "DYNREG_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Show the causes of an error.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the main job end to end: two replicas serve a bot kept current by hot reload
    /// through an update, a bad config and a deactivation; a knowledge base is filled,
    /// ingested and searched. Each step is checked.
    Demo(DemoArgs),
    /// Serve the registry API (the original's routes under /api/v1, /healthz, /readyz).
    Serve(bots::ServeArgs),
    /// Register, read, list, deactivate, delete and watch bots.
    #[command(subcommand)]
    Bots(bots::BotsCommand),
    /// Create, list and delete knowledge bases; upload, list and download their files.
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// Ingest a knowledge base: its files → chunks → embeddings → the vector store.
    Ingest(rag::IngestArgs),
    /// Search a knowledge base that was ingested.
    Search(rag::SearchArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where in-memory vector stores are persisted.
    #[arg(long, env = "DYNREG_VECTORS_DIR", default_value = "data/vectors")]
    vectors_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return out::fail(&anyhow::Error::from(e), cli.verbose),
    };
    let verbose = cli.verbose;
    let result = runtime.block_on(async move {
        match &cli.command {
            Command::Demo(args) => demo::run(&cli, &args.vectors_dir).await,
            Command::Serve(args) => bots::serve(&cli, args).await,
            Command::Bots(cmd) => bots::run(&cli, cmd).await,
            Command::Kb(cmd) => kb::run(&cli, cmd).await,
            Command::Ingest(args) => rag::ingest(&cli, args).await,
            Command::Search(args) => rag::search(&cli, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out::fail(&e, verbose),
    }
}
