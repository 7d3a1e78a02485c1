//! `cargo xtask`: the dynreg repository's automation, std-only so it builds in seconds.
//!
//! - `cargo xtask test-matrix`: tidy, `cargo check` of every backend feature alone and with
//!   none, then the full test suite with all features (against PostgreSQL, Redis and a local
//!   S3 server, found or started here), once more on the embedded defaults, and the API docs
//!   with warnings denied.
//! - `cargo xtask bench`: the benchmarks of every crate, release build, all features.
//! - `cargo xtask tidy`: repository hygiene checks (also run as a test).
#![allow(clippy::print_stdout)]

mod interop;
mod services;
mod tidy;

use std::process::{Command, ExitCode};

/// (package, features to check alone). Every combination is `cargo check`ed with
/// `--no-default-features`, once with nothing and once per feature.
const FEATURE_MATRIX: &[(&str, &[&str])] = &[
    ("dynreg-registry-core", &["conformance"]),
    (
        "dynreg-registry-backends",
        &["sqlite", "postgres", "file", "s3", "http"],
    ),
    ("dynreg-event-bus", &["postgres", "redis"]),
    ("dynreg-knowledge-store", &["file", "s3"]),
    ("dynreg-cache", &["testkit"]),
    ("dynreg-hot-reload", &["s3"]),
    (
        "dynreg-ingestion",
        &["s3", "pgvector", "http", "local", "conformance"],
    ),
    ("dynreg-resource-resolver", &[]),
    ("dynreg-wire", &[]),
    ("dynreg-server", &["knowledge"]),
    ("dynreg-cli", &[]),
    (
        "dynreg",
        &[
            "sqlite", "postgres", "redis", "file", "s3", "pgvector", "http", "server", "local",
        ],
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test-matrix") => test_matrix(),
        Some("bench") => bench(),
        Some("interop") => interop::run(&workspace_root()),
        Some("tidy") => tidy::check(&workspace_root()).map_err(|problems| {
            for p in &problems {
                println!("tidy: {p}");
            }
            format!("{} tidy problem(s)", problems.len())
        }),
        _ => {
            println!("usage: cargo xtask <test-matrix | interop | bench | tidy>");
            Err("unknown command".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

fn cargo(args: &[&str], envs: &[(String, String)], clear: &[&str]) -> Result<(), String> {
    println!("\n$ cargo {}", args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    for k in clear {
        cmd.env_remove(k);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test_matrix() -> Result<(), String> {
    let root = workspace_root();
    tidy::check(&root).map_err(|p| format!("tidy: {}", p.join("; ")))?;
    println!("tidy: ok");

    for (package, features) in FEATURE_MATRIX {
        cargo(
            &[
                "check",
                "-p",
                package,
                "--no-default-features",
                "--all-targets",
                "--quiet",
            ],
            &[],
            &[],
        )?;
        for f in *features {
            cargo(
                &[
                    "check",
                    "-p",
                    package,
                    "--no-default-features",
                    "--features",
                    f,
                    "--all-targets",
                    "--quiet",
                ],
                &[],
                &[],
            )?;
        }
    }

    let services = services::Services::find_or_start(&root);
    services.report();
    if std::env::var("DYNREG_REQUIRE_ALL_BACKENDS").is_ok_and(|v| v == "1")
        && !services.skipped.is_empty()
    {
        return Err(format!(
            "backends required but unavailable: {}",
            services.skipped.join(", ")
        ));
    }
    let result = cargo(
        &["test", "--workspace", "--all-features"],
        &services.env,
        &[],
    )
    .and_then(|()| {
        cargo(
            &["test", "--workspace"],
            &[],
            &[
                services::POSTGRES_VAR,
                services::REDIS_VAR,
                services::S3_VAR,
            ],
        )
    });
    services.report();
    result?;
    // The API docs build without a warning (broken intra-doc links, bad doc syntax).
    cargo(
        &[
            "doc",
            "--workspace",
            "--all-features",
            "--no-deps",
            "--quiet",
        ],
        &[("RUSTDOCFLAGS".to_owned(), "-D warnings".to_owned())],
        &[],
    )
}

fn bench() -> Result<(), String> {
    let services = services::Services::find_or_start(&workspace_root());
    services.report();
    cargo(
        &["bench", "--workspace", "--all-features"],
        &services.env,
        &[],
    )
}
