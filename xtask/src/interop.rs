//! `cargo xtask interop`: the interop tests against the Python original. Creates (once, cached
//! under `target/py-venv`) a Python 3.12 venv with the original installed from PyPI at pinned
//! versions, then runs the Rust tests that drive it. Without Python 3.12 it reports a skip (and
//! fails when `DYNREG_REQUIRE_ALL_BACKENDS=1`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The original, pinned.
const PINS: &[&str] = &[
    "dataknobs-bots[postgres,server,http]==0.13.1",
    "dataknobs-common[redis,postgres]==3.2.0",
    "dataknobs-data[sqlite,postgres]==0.11.0",
    "uvicorn",
    "aioboto3",
];

/// The test targets that drive the original: `(package, features, test)`.
const TESTS: &[(&str, &str, &str)] = &[
    ("dynreg-server", "", "interop_http"),
    ("dynreg-event-bus", "conformance,postgres,redis", "interop"),
    ("dynreg-knowledge-store", "file,s3", "interop"),
    ("dynreg-ingestion", "redis", "interop"),
];

fn python312() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pyenv").arg("root").output() {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let p = Path::new(&root).join("versions/3.12.1/bin/python3.12");
        if !root.is_empty() && p.exists() {
            return Some(p);
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".pyenv/versions/3.12.1/bin/python3.12");
    if p.exists() {
        return Some(p);
    }
    Command::new("python3.12")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("python3.12"))
}

/// The venv's python, created and filled when missing or when the pins changed.
fn venv(root: &Path) -> Result<Option<PathBuf>, String> {
    let venv = root.join("target/py-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".dynreg-pins");
    let pins = PINS.join("\n");
    if python.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == pins) {
        return Ok(Some(python));
    }
    let Some(base) = python312() else {
        return Ok(None);
    };
    println!(
        "interop: creating {} with {}",
        venv.display(),
        base.display()
    );
    let ok = Command::new(&base)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", base.display()))?
        .success();
    if !ok {
        return Err(format!(
            "`{} -m venv {}` failed",
            base.display(),
            venv.display()
        ));
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "-q", "--disable-pip-version-check"])
        .args(PINS);
    let ok = pip
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?
        .success();
    if !ok {
        return Err("installing the original into target/py-venv failed".into());
    }
    std::fs::write(&marker, pins).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(Some(python))
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    let Some(python) = venv(root)? else {
        let msg = "interop: skipped (no Python 3.12: looked for $(pyenv root)/versions/3.12.1/bin/python3.12 and python3.12)";
        if std::env::var("DYNREG_REQUIRE_ALL_BACKENDS").is_ok_and(|v| v == "1") {
            return Err(format!("{msg}, and DYNREG_REQUIRE_ALL_BACKENDS=1"));
        }
        println!("{msg}");
        return Ok(());
    };
    let services = crate::services::Services::find_or_start(root);
    services.report();
    let mut env = services.env.clone();
    env.push((
        "DYNREG_INTEROP_PYTHON".to_owned(),
        python.display().to_string(),
    ));
    for (package, features, test) in TESTS {
        let mut args = vec!["test", "-p", package, "--test", test];
        if !features.is_empty() {
            args.extend(["--features", features]);
        }
        crate::cargo(&args, &env, &[])?;
    }
    println!(
        "interop: ok ({} test target(s) against the Python original)",
        TESTS.len()
    );
    Ok(())
}
