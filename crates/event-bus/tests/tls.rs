//! TLS of the server buses, for real. Certificates come from the `openssl` command (a throwaway
//! CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA); Redis
//! runs as a throwaway `redis-server` child with only a TLS port on 127.0.0.1; PostgreSQL is the
//! local test server (DYNREG_TEST_POSTGRES_URL) when it has `ssl = on`, plus an in-process fake
//! server that refuses TLS. Every test prints `skipped: ...` when what it needs is missing.
#![cfg(any(feature = "redis", feature = "postgres"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dynreg_event_bus::conformance::{next_event, numbered, unique_prefix};
use dynreg_event_bus::{EventBusError, new_uuid_v4};

/// Certificates written to a temporary directory (removed on drop).
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn self_signed_ca(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN=dynreg test {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    Ok(dir.join(cert))
}

/// A CA, a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost), and another CA.
fn make_certs() -> Option<Certs> {
    let dir = std::env::temp_dir().join(format!("dynreg-tls-{}", &new_uuid_v4()[..8]));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let made = (|| -> Result<Certs, String> {
        let ca = self_signed_ca(&dir, "ca")?;
        let other_ca = self_signed_ca(&dir, "other-ca")?;
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        )?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        )?;
        Ok(Certs {
            ca,
            other_ca,
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir: dir.clone(),
        })
    })();
    match made {
        Ok(certs) => Some(certs),
        Err(reason) => {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("skipped: TLS test (cannot make test certificates: {reason})");
            None
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

#[cfg(feature = "redis")]
mod redis_tls {
    use super::*;
    use dynreg_event_bus::redis::{RedisEventBus, RedisEventBusConfig};
    use dynreg_event_bus::{EventBus, create_event_bus};

    /// A `redis-server` child with only a TLS port on 127.0.0.1, killed on drop.
    struct TlsRedis {
        child: std::process::Child,
        port: u16,
    }

    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn start(certs: &Certs) -> Option<TlsRedis> {
        let port = free_port();
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certs.server_cert)
            .arg("--tls-key-file")
            .arg(&certs.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&certs.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipped: redis TLS test (redis-server not runnable: {e})");
                return None;
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    use std::io::Read;
                    let _ = stdout.read_to_string(&mut out);
                }
                eprintln!(
                    "skipped: redis TLS test (redis-server exited with {status}; built without TLS?): {}",
                    out.lines().last().unwrap_or("")
                );
                return None;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(TlsRedis { child, port });
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not open TLS port {port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn config(url: String, ca_file: &Path) -> RedisEventBusConfig {
        let mut config = RedisEventBusConfig::new(url);
        config.connection.tls.ca_file = Some(ca_file.to_owned());
        config.connection.connect_timeout = Duration::from_secs(3);
        config.connection.probe_interval = Duration::from_millis(500);
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rediss_delivers_through_a_tls_server_trusting_a_custom_ca() {
        let Some(certs) = make_certs() else { return };
        let Some(server) = start(&certs).await else {
            return;
        };
        let url = format!("rediss://127.0.0.1:{}", server.port);
        let bus = RedisEventBus::connect(config(url.clone(), &certs.ca))
            .await
            .expect("TLS connect trusting the test CA");
        let prefix = unique_prefix("tls");
        let topic = format!("{prefix}:bots");
        let mut exact = bus.subscribe(&topic).await.unwrap();
        let mut pattern = bus.subscribe_pattern(&format!("{prefix}:*")).await.unwrap();
        for i in 0..100 {
            bus.publish(&topic, &numbered(i)).await.unwrap();
        }
        for i in 0..100 {
            let (t, e) = next_event(&mut exact, "exact over TLS").await;
            assert_eq!(
                (t.as_str(), e.payload["seq"].as_u64()),
                (topic.as_str(), Some(i))
            );
            let (_, e) = next_event(&mut pattern, "pattern over TLS").await;
            assert_eq!(e.payload["seq"].as_u64(), Some(i));
        }
        // The server sees our TLS connections as ordinary clients.
        assert!(bus.pubsub_client_addr().is_some());
        assert!(bus.publish_client_id().is_some());
        bus.close().await.unwrap();

        // The same through the factory, with `ssl: true` on a redis:// URL.
        let bus = create_event_bus(&serde_json::json!({
            "backend": "redis",
            "url": format!("redis://127.0.0.1:{}", server.port),
            "ssl": true,
            "ca_file": certs.ca.display().to_string(),
        }))
        .await
        .expect("factory TLS connect");
        let mut sub = bus.subscribe(&topic).await.unwrap();
        let event = numbered(7);
        bus.publish(&topic, &event).await.unwrap();
        assert_eq!(next_event(&mut sub, "factory over TLS").await.1, event);
        bus.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_certificate_is_a_clear_connect_error() {
        let Some(certs) = make_certs() else { return };
        let Some(server) = start(&certs).await else {
            return;
        };
        let url = format!("rediss://127.0.0.1:{}", server.port);
        let started = std::time::Instant::now();
        let err = RedisEventBus::connect(config(url, &certs.other_ca))
            .await
            .expect_err("a server certificate from an untrusted CA must be refused");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        eprintln!("expected error: {msg}");
        assert!(matches!(err, EventBusError::Connect { .. }), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{}", server.port)), "{msg}");
        assert!(msg.contains("TLS") && msg.contains("certificate"), "{msg}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_against_a_plain_server_fails_within_the_connect_timeout() {
        let Some(url) = dynreg_event_bus::conformance::server_url("redis", "DYNREG_TEST_REDIS_URL")
        else {
            return;
        };
        let Some(certs) = make_certs() else { return };
        let mut config = config(url, &certs.ca);
        config.connection.tls.ssl = true;
        config.connection.connect_timeout = Duration::from_secs(2);
        let started = std::time::Instant::now();
        let err = RedisEventBus::connect(config)
            .await
            .expect_err("TLS to a plain-text server");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        eprintln!("expected error: {msg}");
        assert!(msg.contains("TLS"), "{msg}");
    }

    #[tokio::test]
    async fn bad_ca_file_is_an_invalid_config_naming_the_file() {
        let err = create_event_bus(&serde_json::json!({
            "backend": "redis",
            "url": "rediss://127.0.0.1:1",
            "ca_file": "/nonexistent/dynreg-ca.pem",
        }))
        .await
        .unwrap_err();
        assert!(
            matches!(err, EventBusError::InvalidConfig { ref key, ref reason } if key == "ca_file" && reason.contains("/nonexistent/dynreg-ca.pem")),
            "{err}"
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres_tls {
    use super::*;
    use dynreg_event_bus::EventBus;
    use dynreg_event_bus::postgres::{PostgresEventBus, PostgresEventBusConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake PostgreSQL server on 127.0.0.1 that answers every SSLRequest with `N` (no TLS),
    /// as a server with `ssl = off` does.
    async fn server_without_tls() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 8];
                    if socket.read_exact(&mut request).await.is_ok() {
                        let _ = socket.write_all(b"N").await;
                        let mut rest = Vec::new();
                        let _ = socket.read_to_end(&mut rest).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn ssl_true_against_a_server_without_tls_names_host_port_and_tls() {
        let port = server_without_tls().await;
        let mut config =
            PostgresEventBusConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"));
        config.connection.tls.ssl = true;
        config.connection.connect_timeout = Duration::from_secs(3);
        let err = tokio::time::timeout(Duration::from_secs(10), PostgresEventBus::connect(config))
            .await
            .expect("connect must fail, not hang")
            .expect_err("TLS required but the server has none");
        let msg = err.to_string();
        eprintln!("expected error: {msg}");
        assert!(matches!(err, EventBusError::Connect { .. }), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("TLS"), "{msg}");
    }

    /// Host, port, user, password and database of the test server, and its `ssl` and
    /// `ssl_cert_file` settings.
    async fn server_tls_settings(url: &str) -> Option<(tokio_postgres::Config, PathBuf)> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        let driver = tokio::spawn(connection);
        let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        let cert: String = client
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .unwrap()
            .get(0);
        drop(client);
        let _ = driver.await;
        if ssl != "on" {
            eprintln!("skipped: postgres TLS delivery test (the server has ssl = {ssl})");
            return None;
        }
        let cert = PathBuf::from(cert);
        let readable =
            std::fs::read_to_string(&cert).is_ok_and(|pem| pem.contains("BEGIN CERTIFICATE"));
        let names_localhost = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&cert)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("DNS:localhost"));
        if !readable || !names_localhost {
            eprintln!(
                "skipped: postgres TLS delivery test ({} is not a readable certificate for localhost)",
                cert.display()
            );
            return None;
        }
        Some((url.parse().expect("test URL"), cert))
    }

    /// `host=localhost hostaddr=127.0.0.1`: connect to 127.0.0.1 only, verify the name localhost.
    fn tls_url(base: &tokio_postgres::Config) -> String {
        let mut url = format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={} dbname={}",
            base.get_ports().first().copied().unwrap_or(5432),
            base.get_user().unwrap_or("postgres"),
            base.get_dbname().unwrap_or("postgres"),
        );
        if let Some(password) = base.get_password() {
            url.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
        }
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_over_tls_trusting_the_servers_certificate() {
        let Some(url) =
            dynreg_event_bus::conformance::server_url("postgres", "DYNREG_TEST_POSTGRES_URL")
        else {
            return;
        };
        let Some((base, cert)) = server_tls_settings(&url).await else {
            return;
        };
        let bus = create(&base, &cert, true).await.expect("TLS connect");
        let prefix = unique_prefix("pgtls");
        let topic = format!("{prefix}:bots");
        let mut sub = bus.subscribe(&topic).await.unwrap();
        let mut pattern = bus.subscribe_pattern(&format!("{prefix}:*")).await.unwrap();
        let event = numbered(1);
        bus.publish(&topic, &event).await.unwrap();
        assert_eq!(next_event(&mut sub, "exact over TLS").await.1, event);
        assert_eq!(next_event(&mut pattern, "pattern over TLS").await.1, event);
        // Over the NOTIFY limit: through the claim-check table, over TLS too.
        let mut payload = serde_json::Map::new();
        payload.insert("body".into(), serde_json::json!("x".repeat(20_000)));
        let big = dynreg_event_bus::Event::new(
            dynreg_event_bus::EventType::Custom,
            topic.clone(),
            payload,
        );
        bus.publish(&topic, &big).await.unwrap();
        assert_eq!(next_event(&mut sub, "large over TLS").await.1, big);
        bus.close().await.unwrap();

        // An untrusted server certificate is a clear error, not a hang.
        let Some(certs) = make_certs() else { return };
        let err = create(&base, &certs.other_ca, true)
            .await
            .expect_err("a server certificate from an untrusted CA must be refused");
        let msg = err.to_string();
        eprintln!("expected error: {msg}");
        assert!(msg.contains("localhost:") && msg.contains("TLS"), "{msg}");
        assert!(msg.contains("certificate"), "{msg}");
    }

    async fn create(
        base: &tokio_postgres::Config,
        ca_file: &Path,
        ssl: bool,
    ) -> Result<std::sync::Arc<dyn EventBus>, EventBusError> {
        let config = serde_json::json!({
            "backend": "postgres",
            "url": tls_url(base),
            "ssl": ssl,
            "ca_file": ca_file.display().to_string(),
            "connect_timeout_ms": 5000,
        });
        tokio::time::timeout(
            Duration::from_secs(15),
            dynreg_event_bus::create_event_bus(&config),
        )
        .await
        .expect("connect must finish, not hang")
    }
}
