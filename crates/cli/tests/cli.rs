//! The real `dynreg` binary against temporary environments and a real `dynreg serve` on a free
//! port: the bot and knowledge-base commands, the remote mode, `watch`, and the exit codes and
//! messages of bad input.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// An environment file with SQLite and file knowledge under a temporary folder.
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(
            dir.path().join("env.yaml"),
            format!(
                "name: clitest\nresources:\n  databases:\n    registry:\n      backend: sqlite\n      path: {}/registry.sqlite3\n  knowledge:\n    knowledge:\n      backend: file\n      path: {}/knowledge\n",
                data.display(),
                data.display()
            ),
        )
        .unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dynreg"));
        c.arg("--config").arg(self.path("env.yaml"));
        c.env_remove("DYNREG_URL")
            .env_remove("DYNREG_TOKEN")
            .env_remove("DYNREG_ENV");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// A running `dynreg serve` (killed on drop) and its base URL.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env, args: &[&str]) -> Served {
    let mut child = env
        .cmd()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("serving the registry on ")
        .and_then(|u| u.strip_suffix("/api/v1"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Served { child, url }
}

#[test]
fn bots_locally_register_get_update_list_deactivate_delete() {
    let env = Env::new();
    let cfg = env.write("bot.yaml", "llm:\n  model: m1\nprompt: hello\n");
    let out = ok(&env.run(&[
        "bots",
        "register",
        "support",
        "-f",
        cfg.to_str().unwrap(),
        "-m",
        "team=x",
        "-m",
        "tier=2",
    ]));
    assert_eq!(out.trim(), "created support at revision 1");
    let reg = json(&env.run(&["--json", "bots", "get", "support"]));
    assert_eq!(reg["config"]["llm"]["model"], "m1");
    assert_eq!(
        (
            reg["metadata"]["team"].clone(),
            reg["metadata"]["tier"].clone()
        ),
        (Value::from("x"), Value::from(2))
    );
    // Update with a compare-and-swap: the current revision wins, a stale one is refused.
    let v2 = env.write("v2.json", r#"{"llm": {"model": "m2"}}"#);
    ok(&env.run(&[
        "bots",
        "register",
        "support",
        "-f",
        v2.to_str().unwrap(),
        "--if-revision",
        "1",
    ]));
    let err = failed(
        &env.run(&[
            "bots",
            "register",
            "support",
            "-f",
            v2.to_str().unwrap(),
            "--if-revision",
            "1",
        ]),
        1,
    );
    assert!(err.contains("conflict"), "{err}");
    let table = ok(&env.run(&["bots", "ls"]));
    assert!(
        table.starts_with("BOT") && table.contains("support  active  2"),
        "{table}"
    );
    ok(&env.run(&["bots", "deactivate", "support"]));
    let listed = json(&env.run(&["--json", "bots", "ls", "--status", "inactive"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    ok(&env.run(&["bots", "rm", "support"]));
    let err = failed(&env.run(&["bots", "get", "support"]), 1);
    assert_eq!(err.trim(), "error: bot \"support\" not found");
}

#[test]
fn knowledge_bases_upload_a_folder_list_and_download() {
    let env = Env::new();
    env.write("docs/guide.md", "# Guide\n\nHello.\n");
    env.write("docs/faq/billing.md", "# Billing\n");
    ok(&env.run(&["kb", "create", "support"]));
    let out = ok(&env.run(&["kb", "put", "support", env.path("docs").to_str().unwrap()]));
    assert!(out.contains("uploaded 2 file(s)"), "{out}");
    let files = json(&env.run(&["--json", "kb", "files", "support"]));
    let paths: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["faq/billing.md", "guide.md"]);
    assert_eq!(
        ok(&env.run(&["kb", "get", "support", "faq/billing.md"])),
        "# Billing\n"
    );
    let kbs = ok(&env.run(&["kb", "ls"]));
    assert!(kbs.contains("support") && kbs.contains("2"), "{kbs}");
    ok(&env.run(&["kb", "rm", "support"]));
    failed(&env.run(&["kb", "files", "support"]), 1);
}

#[test]
fn a_remote_server_is_driven_with_tokens_and_watched() {
    let env = Env::new();
    let served = serve(&env, &["--write-token", "w-tok", "--read-token", "r-tok"]);
    let cfg = env.write("bot.yaml", "model: m1\n");
    let remote = |token: &str, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dynreg"));
        c.args(["--url", &served.url, "--token", token]).args(args);
        c.output().unwrap()
    };
    // A watcher started before the write sees it.
    let watcher = Command::new(env!("CARGO_BIN_EXE_dynreg"))
        .args([
            "--url",
            &served.url,
            "--token",
            "r-tok",
            "bots",
            "watch",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok(&remote(
        "w-tok",
        &[
            "bots",
            "register",
            "remote-bot",
            "-f",
            cfg.to_str().unwrap(),
        ],
    ));
    let seen = watcher.wait_with_output().unwrap();
    let line = String::from_utf8(seen.stdout).unwrap();
    assert!(line.contains("upsert\tremote-bot\tactive"), "{line:?}");
    // Reads with the read token; writes refused with it, and with a wrong token.
    let got = json(&remote("r-tok", &["--json", "bots", "get", "remote-bot"]));
    assert_eq!(got["config"]["model"], "m1");
    let err = failed(&remote("r-tok", &["bots", "rm", "remote-bot"]), 1);
    assert!(err.contains("403"), "{err}");
    let err = failed(&remote("wrong", &["bots", "ls"]), 1);
    assert!(err.contains("401") && err.lines().count() == 1, "{err}");
    // What the server wrote is in the environment's registry.
    let local = json(&env.run(&["--json", "bots", "get", "remote-bot"]));
    assert_eq!(local["bot_id"], "remote-bot");
}

#[test]
fn bad_input_gets_the_documented_exit_codes_and_messages() {
    let env = Env::new();
    let err = failed(
        &env.run(&[
            "bots",
            "register",
            "x",
            "-f",
            env.path("missing.yaml").to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        err.contains("missing.yaml") && err.contains("No such file"),
        "{err}"
    );
    let broken = env.write("broken.yaml", "a: [1\n");
    let err = failed(
        &env.run(&["bots", "register", "x", "-f", broken.to_str().unwrap()]),
        1,
    );
    assert!(
        err.contains("broken.yaml is not valid YAML") && err.contains("line 2"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dynreg"))
        .args([
            "--env",
            "nowhere",
            "--config-dir",
            env.path("").to_str().unwrap(),
            "bots",
            "ls",
        ])
        .output()
        .unwrap();
    let err = failed(&out, 1);
    assert!(
        err.contains("\"nowhere\"") && err.contains("not found"),
        "{err}"
    );
    failed(&env.run(&["bots", "frobnicate"]), 2);
    failed(&env.run(&["bots", "register", "x"]), 2);
    let local = env.write(
        "local.yaml",
        "path: /home/alice/models\nurl: http://localhost:8080\n",
    );
    let err = failed(
        &env.run(&["bots", "lint", "-f", local.to_str().unwrap()]),
        1,
    );
    assert!(err.contains("2 machine-local value(s)"), "{err}");
    let portable = env.write("portable.yaml", "model: ${MODEL}\n");
    ok(&env.run(&["bots", "lint", "-f", portable.to_str().unwrap()]));
    // A server without tokens refuses a public address.
    let out = env.run(&["serve", "--bind", "0.0.0.0:0"]);
    let err = failed(&out, 1);
    assert!(err.contains("insecure"), "{err}");
}

#[test]
fn ingest_then_search_finds_the_file_and_a_second_ingest_changes_nothing() {
    let env = Env::new();
    env.write(
        "kb/billing.md",
        "# Billing\n\n## Refunds\n\nRefunds are issued within 14 days to the original card.\n",
    );
    env.write(
        "kb/shipping.md",
        "# Shipping\n\nParcels ship from Rotterdam every weekday.\n",
    );
    env.write(
        "kb/faq/accounts.md",
        "# Accounts\n\nReset your password from the login page.\n",
    );
    let vectors = env.path("vectors");
    let vectors = vectors.to_str().unwrap();
    ok(&env.run(&["kb", "create", "support"]));
    ok(&env.run(&["kb", "put", "support", env.path("kb").to_str().unwrap()]));
    let first = json(&env.run(&["--json", "ingest", "support", "--vectors-dir", vectors]));
    assert_eq!(
        (
            first["files_processed"].as_u64(),
            first["chunks_created"].as_u64().unwrap() >= 3
        ),
        (Some(3), true)
    );
    // A later process searches what this one stored.
    let hits = json(&env.run(&[
        "--json",
        "search",
        "support",
        "how long do refunds take",
        "-k",
        "2",
        "--vectors-dir",
        vectors,
    ]));
    assert_eq!(
        hits[0]["source"].as_str().unwrap(),
        "file://support/billing.md"
    );
    assert_eq!(hits[0]["heading_path"], "Billing > Refunds");
    let table = ok(&env.run(&[
        "search",
        "support",
        "password reset",
        "--vectors-dir",
        vectors,
    ]));
    assert!(
        table.starts_with("SCORE") && table.lines().nth(1).unwrap().contains("faq/accounts.md"),
        "{table}"
    );
    // Nothing changed: nothing is embedded again.
    let again = json(&env.run(&["--json", "ingest", "support", "--vectors-dir", vectors]));
    assert_eq!(
        (
            again["files_processed"].as_u64(),
            again["files_unchanged"].as_u64()
        ),
        (Some(0), Some(3))
    );
    // An unknown knowledge base is a failed operation naming it.
    let err = failed(
        &env.run(&["ingest", "nowhere", "--vectors-dir", vectors]),
        1,
    );
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn no_progress_bar_is_drawn_into_a_pipe() {
    let env = Env::new();
    for i in 0..30 {
        env.write(&format!("many/f{i:02}.md"), &format!("# File {i}\n"));
    }
    ok(&env.run(&["kb", "create", "bulk"]));
    let out = env.run(&["kb", "put", "bulk", env.path("many").to_str().unwrap()]);
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 31, "{stdout}");
    assert!(
        stdout.ends_with("uploaded 30 file(s) to bulk\n"),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains("eta") && stderr.is_empty(),
        "{stderr:?}"
    );
}

#[test]
fn knowledge_through_a_server_upload_ingest_search_download() {
    let env = Env::new();
    let served = serve(
        &env,
        &[
            "--write-token",
            "w",
            "--read-token",
            "r",
            "--vectors-dir",
            env.path("vec").to_str().unwrap(),
        ],
    );
    env.write(
        "kb/billing.md",
        "# Billing\n\n## Refunds\n\nRefunds are issued within 14 days.\n",
    );
    env.write(
        "kb/deep/shipping guide.md",
        "# Shipping\n\nParcels ship from Rotterdam.\n",
    );
    let remote = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dynreg"))
            .args(["--url", &served.url, "--token", token])
            .args(args)
            .output()
            .unwrap()
    };
    ok(&remote("w", &["kb", "create", "support"]));
    let err = failed(&remote("w", &["kb", "create", "support"]), 1);
    assert!(err.contains("409"), "{err}");
    ok(&remote(
        "w",
        &["kb", "put", "support", env.path("kb").to_str().unwrap()],
    ));
    let err = failed(
        &remote(
            "r",
            &["kb", "put", "support", env.path("kb").to_str().unwrap()],
        ),
        1,
    );
    assert!(err.contains("403"), "{err}");
    let files = json(&remote("r", &["--json", "kb", "files", "support"]));
    let paths: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["billing.md", "deep/shipping guide.md"]);
    assert_eq!(
        ok(&remote(
            "r",
            &["kb", "get", "support", "deep/shipping guide.md"]
        )),
        "# Shipping\n\nParcels ship from Rotterdam.\n"
    );
    let summary = json(&remote("w", &["--json", "ingest", "support"]));
    assert_eq!(summary["files_processed"], 2);
    // The change set after a version, through the server.
    let version = json(&remote("r", &["--json", "kb", "ls"]))[0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    env.write(
        "changed/billing.md",
        "# Billing\n\n## Refunds\n\nRefunds are issued within 10 days.\n",
    );
    ok(&remote(
        "w",
        &[
            "kb",
            "put",
            "support",
            env.path("changed").to_str().unwrap(),
        ],
    ));
    let summary = json(&remote(
        "w",
        &["--json", "ingest", "support", "--changes-since", &version],
    ));
    assert_eq!(summary["files_processed"], 1, "{summary}");
    failed(
        &remote(
            "w",
            &["ingest", "support", "--full", "--changes-since", &version],
        ),
        2,
    );
    let hits = json(&remote(
        "r",
        &[
            "--json",
            "search",
            "support",
            "when are refunds issued",
            "-k",
            "1",
        ],
    ));
    assert_eq!(hits[0]["source"], "file://support/billing.md");
    let err = failed(&remote("r", &["search", "nowhere", "x"]), 1);
    assert!(err.contains("404"), "{err}");
    ok(&remote("w", &["kb", "rm", "support"]));
    let kbs = json(&remote("r", &["--json", "kb", "ls"]));
    assert_eq!(kbs, serde_json::json!([]));
}

#[test]
fn the_demo_runs_on_the_development_environment_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let envs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/environments");
    let demo = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dynreg"))
            .arg("--config-dir")
            .arg(&envs)
            .args(args)
            .current_dir(dir.path())
            .env("DATA_DIR", dir.path().join("data"))
            .env_remove("DYNREG_ENV")
            .env_remove("DYNREG_URL")
            .env_remove("DYNREG_VECTORS_DIR")
            .output()
            .unwrap()
    };
    let text = ok(&demo(&["demo"]));
    let steps: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "register",
            "update",
            "bad",
            "deactivate",
            "knowledge",
            "ingest",
            "search"
        ],
        "{text}"
    );
    assert!(text.contains("billing.md (Billing > Refunds)"), "{text}");
    assert!(
        text.contains("3 files → 4 chunks embedded and stored; 0 unchanged"),
        "{text}"
    );
    // Again on the same data: the demo starts its bots and knowledge base over, and the
    // files it stores again are the same, so none is embedded again.
    let steps = json(&demo(&["--json", "demo"]));
    assert_eq!(steps.as_array().unwrap().len(), 7, "{steps}");
    assert!(
        steps[5]["detail"]
            .as_str()
            .unwrap()
            .starts_with("0 files → 0 chunks embedded and stored; 3 unchanged"),
        "{steps}"
    );
    assert!(dir.path().join("data/registry.sqlite3").is_file());
    assert!(
        dir.path()
            .join("data/vectors/demo-support.vectors")
            .is_file()
    );
}
