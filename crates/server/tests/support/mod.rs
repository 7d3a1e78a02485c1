//! Test helpers: a server on a real loopback TCP port, and a client for it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use dynreg_registry_backends::HttpBackend;
use dynreg_registry_backends::config::HttpConfig;
use dynreg_registry_core::RegistryBackend;
use dynreg_server::{RegistryServer, ServerConfig};
use tokio::sync::oneshot;

/// A running server; dropping it shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub server: RegistryServer,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<Result<(), dynreg_server::ServerError>>>,
}

impl Running {
    /// `http://127.0.0.1:PORT/api/v1`.
    pub fn base(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn root(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begins a graceful shutdown and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `backend` with `config` on 127.0.0.1 (an ephemeral port).
pub async fn serve(backend: Arc<dyn RegistryBackend>, config: ServerConfig) -> Running {
    let server = RegistryServer::new(backend).with_config(config).unwrap();
    serve_server(server).await
}

pub async fn serve_server(server: RegistryServer) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let s = server.clone();
    let done = tokio::spawn(async move {
        s.serve(listener, async move {
            let _ = rx.await;
        })
        .await
    });
    Running {
        addr,
        server,
        stop: Some(tx),
        done: Some(done),
    }
}

/// An initialized client of `base`, with `token` if given.
pub async fn client(base: &str, token: Option<&str>) -> HttpBackend {
    let b = HttpBackend::with_config(HttpConfig {
        base_url: Some(base.to_owned()),
        auth_token: token.map(str::to_owned),
        retries: 0,
        ..HttpConfig::default()
    })
    .unwrap();
    b.initialize().await.unwrap();
    b
}
