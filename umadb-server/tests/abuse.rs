//! API keys across a restart that removes one, keys kept out of even the most verbose logs, and
//! TLS versions: only TLS 1.2 and 1.3 are spoken.

mod common;
mod support;

use common::{event, BearerKey};
use std::process::Command;
use std::time::Duration;
use support::*;
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

fn keyed(
    server: &Umadb,
    key: &str,
) -> DcbClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerKey>>
{
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_lazy();
    DcbClient::with_interceptor(channel, BearerKey(Some(key.to_string())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_by_restart_no_longer_works_even_for_streams_opened_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut server = Umadb::spawn(&db, &["--api-key", "old-key", "--api-key", "new-key"]);
    let mut old = keyed(&server, "old-key");
    old.append(v1::AppendRequest {
        events: vec![event("E", &[], b"1")],
        ..Default::default()
    })
    .await
    .expect("the old key works before the restart");
    let mut stream = old
        .subscribe(v1::SubscribeRequest::default())
        .await
        .expect("subscribe with the old key")
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().events.len(), 1);

    // Restart with only the new key, on the same port so the old clients reconnect to it.
    let port = server.addr.port().to_string();
    server.kill();
    let listen = format!("127.0.0.1:{port}");
    let server = Umadb::spawn(&db, &["--listen", &listen, "--api-key", "new-key"]);
    assert_eq!(server.addr.port().to_string(), port);

    // The stream opened with the removed key does not survive the restart ...
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the old stream ends");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "the old stream delivered more: {ended:?}"
    );
    // ... and every call with the removed key is now refused, on the same client.
    let status = old
        .subscribe(v1::SubscribeRequest::default())
        .await
        .expect_err("a new stream with the removed key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = old
        .head(v1::HeadRequest {})
        .await
        .expect_err("head with the removed key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut new = keyed(&server, "new-key");
    let head = new
        .head(v1::HeadRequest {})
        .await
        .expect("the new key works");
    assert_eq!(head.into_inner().position, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut command_log = String::new();
    {
        let server = Umadb::try_spawn_with(&db, &["--api-key", "right-key-4f1c"], |c| {
            c.env("RUST_LOG", "trace");
        })
        .expect("server starts");
        for key in ["right-key-4f1c", "wrong-key-9a7d"] {
            let _ = keyed(&server, key).head(v1::HeadRequest {}).await;
            let _ = keyed(&server, key)
                .append(v1::AppendRequest {
                    events: vec![event("E", &[], b"")],
                    ..Default::default()
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        command_log.push_str(&server.log());
    }
    assert!(command_log.contains("listening on"), "the log was captured");
    assert!(command_log.lines().count() > 5, "trace logging is on");
    for key in ["right-key-4f1c", "wrong-key-9a7d"] {
        assert!(!command_log.contains(key), "{key} appears in the log");
    }
}

/// Runs `openssl s_client` with one TLS version against `addr`; true if the handshake completed.
fn handshake(addr: std::net::SocketAddr, version: &str) -> bool {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version])
        // Allow old protocols on the client side, so only the server can refuse them.
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_accepted() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("this test needs the openssl command line tool");
    }
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Umadb::spawn(
        &dir.path().join("db"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = server.addr;
    let outcomes: Vec<(&str, bool)> = tokio::task::spawn_blocking(move || {
        ["-tls1", "-tls1_1", "-tls1_2", "-tls1_3"]
            .into_iter()
            .map(|v| (v, handshake(addr, v)))
            .collect()
    })
    .await
    .unwrap();
    eprintln!("handshakes: {outcomes:?}");
    assert_eq!(
        outcomes,
        vec![
            ("-tls1", false),
            ("-tls1_1", false),
            ("-tls1_2", true),
            ("-tls1_3", true)
        ]
    );
}
