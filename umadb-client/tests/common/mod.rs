//! A real `umadb` server on loopback for the client's tests, started in-process.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use umadb_client::{Event, Query, QueryItem};
use umadb_server::{RunningServer, ServerConfig, TlsConfig};

pub const API_KEY: &str = "umadb:test-key-0123456789";

/// A server over a temporary store. Restarting keeps the store and the port.
pub struct TestServer {
    dir: TempDir,
    config: ServerConfig,
    server: Option<RunningServer>,
    /// The CA that signed the server's certificate, when serving TLS.
    pub ca_path: Option<PathBuf>,
}

#[derive(Default, Clone, Copy)]
pub struct Options {
    pub tls: bool,
    pub api_key: bool,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut config = ServerConfig::new(listen, dir.path().join("store"));
        config.limits.shutdown_grace = Duration::from_secs(2);
        let mut ca_path = None;
        if options.tls {
            let (tls, ca) = write_certificates(&dir);
            config.tls = Some(tls);
            ca_path = Some(ca);
        }
        if options.api_key {
            config.api_keys.push(API_KEY.to_string());
        }
        let server = umadb_server::start(config.clone())
            .await
            .expect("server starts");
        // Restarts bind the port the first start picked.
        config.listen = server.local_addr();
        TestServer {
            dir,
            config,
            server: Some(server),
            ca_path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr())
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("server stops cleanly");
        }
    }

    /// Starts again on the same port and store; retries while the port is still held.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "stop the server first");
        let mut last_error = None;
        for _ in 0..50 {
            match umadb_server::start(self.config.clone()).await {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(error) => {
                    last_error = Some(error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("server did not start again: {last_error:?}");
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, written as PEM files.
fn write_certificates(dir: &TempDir) -> (TlsConfig, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "UmaDB test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "umadb test server");
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .expect("server certificate");

    let ca_path = dir.path().join("ca.pem");
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");
    std::fs::write(&cert_path, server_cert.pem()).expect("write certificate");
    std::fs::write(&key_path, server_key.serialize_pem()).expect("write key");
    (
        TlsConfig {
            cert_path,
            key_path,
        },
        ca_path,
    )
}

/// A free loopback port with nothing listening on it.
pub fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

pub fn course_event(course: &str, n: u32) -> Event {
    Event::new(
        "CourseDefined",
        [format!("course:{course}")],
        format!("{{\"n\":{n}}}").into_bytes(),
    )
}

pub fn course_query(course: &str) -> Query {
    Query::from_items([QueryItem::new(
        ["CourseDefined"],
        [format!("course:{course}")],
    )])
}
