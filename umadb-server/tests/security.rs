//! API keys on every DCB call (streams included), TLS with a self-signed certificate, and a
//! plain-text client against a TLS server.

mod common;

use common::*;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;
use umadb_proto::v1::error_response::ErrorType;
use umadb_server::TlsConfig;

type KeyedClient = DcbClient<InterceptedService<Channel, BearerKey>>;

/// Calls every DCB RPC; returns the status of each that failed, by name.
async fn call_every_rpc(
    client: &mut KeyedClient,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut outcomes = Vec::new();
    let append = v1::AppendRequest {
        events: vec![event("E", &[], b"")],
        ..Default::default()
    };
    outcomes.push(("Append", client.append(append).await.map(drop)));
    outcomes.push(("Head", client.head(v1::HeadRequest {}).await.map(drop)));
    let tracking = v1::TrackingRequest { source: "s".into() };
    outcomes.push((
        "GetTrackingInfo",
        client.get_tracking_info(tracking).await.map(drop),
    ));
    let read = async {
        let mut stream = client.read(v1::ReadRequest::default()).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    };
    outcomes.push(("Read", read.await));
    let read_subscribe = v1::ReadRequest {
        subscribe: Some(true),
        ..Default::default()
    };
    outcomes.push((
        "Read(subscribe)",
        client.read(read_subscribe).await.map(drop),
    ));
    let subscribe = v1::SubscribeRequest::default();
    outcomes.push(("Subscribe", client.subscribe(subscribe).await.map(drop)));
    outcomes
}

#[tokio::test]
async fn every_dcb_rpc_requires_a_valid_api_key() {
    let server = TestServer::start_with(|c| c.api_keys = vec!["s3cret".into()]).await;
    for key in [
        None,
        Some("wrong"),
        Some("s3cre"),
        Some("s3cret2"),
        Some(""),
    ] {
        let mut client = server.client_with_key(key).await;
        for (rpc, outcome) in call_every_rpc(&mut client).await {
            let status = outcome.expect_err(&format!("{rpc} with key {key:?} was accepted"));
            let message = assert_error(&status, Code::Unauthenticated, ErrorType::Authentication);
            assert!(
                message.contains("API key") || message.contains("Bearer"),
                "{message}"
            );
        }
    }
    let mut client = server.client_with_key(Some("s3cret")).await;
    for (rpc, outcome) in call_every_rpc(&mut client).await {
        outcome.unwrap_or_else(|s| panic!("{rpc} with the right key failed: {s:?}"));
    }
    // Only the accepted append wrote anything.
    let head = client.head(v1::HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.position, Some(1));
}

#[tokio::test]
async fn several_keys_are_accepted_so_keys_can_be_rotated() {
    let server = TestServer::start_with(|c| c.api_keys = vec!["old".into(), "new".into()]).await;
    for key in ["old", "new"] {
        let mut client = server.client_with_key(Some(key)).await;
        for (rpc, outcome) in call_every_rpc(&mut client).await {
            outcome.unwrap_or_else(|s| panic!("{rpc} with key {key} failed: {s:?}"));
        }
    }
    let mut client = server.client_with_key(Some("older")).await;
    let status = client.head(v1::HeadRequest {}).await.unwrap_err();
    assert_error(&status, Code::Unauthenticated, ErrorType::Authentication);
}

#[tokio::test]
async fn without_configured_keys_no_key_is_needed_and_any_key_is_ignored() {
    let server = TestServer::start().await;
    for key in [None, Some("anything")] {
        let mut client = server.client_with_key(key).await;
        for (rpc, outcome) in call_every_rpc(&mut client).await {
            outcome.unwrap_or_else(|s| panic!("{rpc} failed: {s:?}"));
        }
    }
}

#[tokio::test]
async fn health_is_open_when_api_keys_are_required() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start_with(|c| c.api_keys = vec!["k".into()]).await;
    let mut health = HealthClient::new(server.channel().await);
    health
        .check(HealthCheckRequest {
            service: "umadb.v1.DCB".into(),
        })
        .await
        .expect("health check without a key");
}

struct Tls {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Tls {
    fn generate() -> Tls {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write key");
        Tls { dir, cert_pem }
    }

    fn config(&self) -> TlsConfig {
        TlsConfig {
            cert_path: self.dir.path().join("cert.pem"),
            key_path: self.dir.path().join("key.pem"),
        }
    }

    async fn channel(&self, server: &TestServer) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.cert_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", server.addr()))
            .expect("endpoint")
            .tls_config(tls)
            .expect("client TLS config")
            .connect()
            .await
            .expect("TLS connect")
    }
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate_and_an_api_key() {
    let tls = Tls::generate();
    let server = TestServer::start_with(|c| {
        c.tls = Some(tls.config());
        c.api_keys = vec!["k".into()];
    })
    .await;
    let channel = tls.channel(&server).await;
    let mut client = DcbClient::with_interceptor(channel.clone(), BearerKey(Some("k".into())));
    for (rpc, outcome) in call_every_rpc(&mut client).await {
        outcome.unwrap_or_else(|s| panic!("{rpc} over TLS failed: {s:?}"));
    }
    let mut no_key = DcbClient::with_interceptor(channel, BearerKey(None));
    let status = no_key.head(v1::HeadRequest {}).await.unwrap_err();
    assert_error(&status, Code::Unauthenticated, ErrorType::Authentication);
}

#[tokio::test]
async fn a_plain_text_client_against_a_tls_server_fails_cleanly() {
    let tls = Tls::generate();
    let server = TestServer::start_with(|c| c.tls = Some(tls.config())).await;
    let attempt = async {
        let channel = Endpoint::from_shared(server.url())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let mut client = DcbClient::new(channel);
        client
            .head(v1::HeadRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let outcome = tokio::time::timeout(WAIT, attempt)
        .await
        .expect("fails promptly instead of hanging");
    assert!(
        outcome.is_err(),
        "a plain-text call to a TLS server succeeded"
    );
    // The server is unharmed.
    let mut client = DcbClient::new(tls.channel(&server).await);
    client
        .head(v1::HeadRequest {})
        .await
        .expect("TLS still works");
}

#[tokio::test]
async fn a_tls_client_that_does_not_trust_the_certificate_is_refused() {
    let tls = Tls::generate();
    let other = Tls::generate();
    let server = TestServer::start_with(|c| c.tls = Some(tls.config())).await;
    let attempt = async {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&other.cert_pem))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://{}", server.addr()))?
            .tls_config(config)?
            .connect()
            .await?;
        DcbClient::new(channel)
            .head(v1::HeadRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let outcome = tokio::time::timeout(WAIT, attempt).await.expect("prompt");
    assert!(outcome.is_err());
}

#[tokio::test]
async fn missing_or_invalid_tls_files_fail_at_start_with_a_clear_error() {
    let tls = Tls::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut missing =
        umadb_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("db"));
    missing.tls = Some(TlsConfig {
        cert_path: dir.path().join("nope.pem"),
        key_path: tls.config().key_path,
    });
    let error = umadb_server::start(missing).await.err().expect("fails");
    assert!(matches!(error, umadb_server::ServerError::Tls(_)));
    assert!(error.to_string().contains("nope.pem"), "{error}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let mut invalid =
        umadb_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("db2"));
    invalid.tls = Some(TlsConfig {
        cert_path: garbage.clone(),
        key_path: garbage,
    });
    let error = umadb_server::start(invalid).await.err().expect("fails");
    assert!(
        matches!(error, umadb_server::ServerError::Tls(_)),
        "{error}"
    );
}

#[test]
fn api_keys_never_appear_in_debug_output() {
    let mut config = umadb_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), "db");
    config.api_keys = vec!["very-secret-key".into()];
    let debug = format!("{config:?}");
    assert!(!debug.contains("very-secret-key"), "{debug}");
}
