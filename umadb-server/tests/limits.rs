//! Configurable connection limit and request timeout.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;
use umadb_proto::v1::error_response::ErrorType;

async fn head_on_new_connection(server: &TestServer) -> Result<Option<u64>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("endpoint")
        .connect_lazy();
    let mut client = DcbClient::new(channel);
    Ok(client.head(v1::HeadRequest {}).await?.into_inner().position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_their_places_are_given_back() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    first
        .head(v1::HeadRequest {})
        .await
        .expect("first connection");
    second
        .head(v1::HeadRequest {})
        .await
        .expect("second connection");
    let refused = head_on_new_connection(&server)
        .await
        .expect_err("a third connection is over the limit");
    // The server closes the socket: the client sees a broken connection.
    assert!(
        matches!(
            refused.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) && refused.details().is_empty(),
        "{refused:?}"
    );
    // The two connections keep working.
    first
        .head(v1::HeadRequest {})
        .await
        .expect("first still served");
    drop(second);
    // Once a connection closes, its place is free again.
    let deadline = Instant::now() + WAIT;
    loop {
        match head_on_new_connection(&server).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no place freed: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_over_the_request_timeout_fails_and_streams_are_not_cut() {
    let server =
        TestServer::start_with(|c| c.limits.request_timeout = Some(Duration::from_millis(1))).await;
    let mut client = server.client().await;
    let mut subscription = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .expect("a stream opens")
        .into_inner();
    // 50,000 events with an fsync take far longer than a millisecond.
    let events = (0..50_000)
        .map(|i| event("E", &[&format!("t{i}")], b"data"))
        .collect();
    let status = append(&mut client, append_request(events))
        .await
        .expect_err("the append outlives the timeout");
    // DEADLINE_EXCEEDED with details saying what to do: not a bare CANCELLED, which clients
    // take for a call their own user cancelled.
    let message = assert_error(&status, Code::DeadlineExceeded, ErrorType::Io);
    assert!(message.contains("may still be recorded"), "{message}");
    assert_eq!(
        umadb_proto::error_from_status(&status),
        umadb_core::Error::Transport(message)
    );
    // The subscription, open far longer than the timeout, is still open: whatever the append
    // wrote (it may have committed after its caller gave up) arrives, then it waits.
    // The append is atomic: once it is in, the head is 50,000; give it a moment to land.
    // Head is a unary call too: on a loaded machine it can itself outlive the 1 ms timeout,
    // so a timed-out head is asked again.
    let mut head = 0;
    for _ in 0..100 {
        match client.head(v1::HeadRequest {}).await {
            Ok(response) => {
                head = response.into_inner().position.unwrap_or(0);
                if head == 50_000 {
                    break;
                }
            }
            Err(status) => assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(head == 0 || head == 50_000, "head {head}");
    let received = receive(&mut subscription, head as usize).await;
    assert_eq!(received.len() as u64, head);
    let pending = tokio::time::timeout(Duration::from_millis(100), subscription.message()).await;
    assert!(pending.is_err(), "the stream ended: {pending:?}");
}

#[test]
fn the_limits_have_documented_defaults() {
    let limits = umadb_server::Limits::default();
    assert_eq!(limits.max_connections, 10_000);
    assert_eq!(limits.max_streams_per_connection, 10_000);
    assert_eq!(limits.request_timeout, Some(Duration::from_secs(60)));
    assert_eq!(limits.max_response_bytes, 256 * 1024);
}
