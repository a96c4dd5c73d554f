//! Hostile requests, table-driven: each gets a clear error (or a bounded, correct answer), leaves
//! the store untouched, and the server keeps serving.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::error_response::ErrorType;

const SEEDED: u64 = 10;

async fn seeded_server() -> TestServer {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let events = (0..SEEDED)
        .map(|i| event("Seed", &[&format!("s{i}"), "seed"], b"seed"))
        .collect();
    append(&mut client, append_request(events)).await.unwrap();
    server
}

/// The store still holds exactly the seeded events and answers calls.
async fn assert_untouched_and_serving(server: &TestServer, case: &str) {
    let mut client = server.client().await;
    let head = tokio::time::timeout(WAIT, client.head(v1::HeadRequest {}))
        .await
        .unwrap_or_else(|_| panic!("{case}: the server stopped answering"))
        .unwrap_or_else(|e| panic!("{case}: Head failed afterwards: {e:?}"));
    assert_eq!(
        head.into_inner().position,
        Some(SEEDED),
        "{case}: store changed"
    );
    let (events, _) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .unwrap();
    assert_eq!(
        positions(&events),
        (1..=SEEDED).collect::<Vec<_>>(),
        "{case}"
    );
}

fn many_events(n: usize) -> Vec<v1::Event> {
    (0..n).map(|_| event("E", &[], b"")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_appends_are_refused_clearly_and_touch_nothing() {
    let server = seeded_server().await;
    let mut with_bad_uuid = event("E", &[], b"");
    with_bad_uuid.uuid = "not-a-uuid".into();
    let mut with_huge_metadata = event("E", &[], b"");
    with_huge_metadata.metadata.push(v1::MetadataEntry {
        key: "k".into(),
        value: "v".repeat(70_000),
    });
    let table: Vec<(&str, v1::AppendRequest, Code, &str)> = vec![
        (
            "100,001 events in one append",
            append_request(many_events(100_001)),
            Code::InvalidArgument,
            "100001 events",
        ),
        (
            "a 10 MB tag",
            append_request(vec![event("E", &["t".repeat(10_000_000).as_str()], b"")]),
            Code::InvalidArgument,
            "65535",
        ),
        (
            "a 10 MB event type",
            append_request(vec![event(&"T".repeat(10_000_000), &[], b"")]),
            Code::InvalidArgument,
            "65535",
        ),
        (
            "a metadata value over 65,535 bytes",
            append_request(vec![with_huge_metadata]),
            Code::InvalidArgument,
            "65535",
        ),
        (
            "invalid uuid text",
            append_request(vec![with_bad_uuid]),
            Code::InvalidArgument,
            "not-a-uuid",
        ),
        (
            "an oversized message (70 MB of data)",
            append_request(vec![event("E", &[], &vec![0u8; 70 << 20])]),
            Code::InvalidArgument,
            "",
        ),
        (
            "tracking source over 65,535 bytes",
            v1::AppendRequest {
                events: vec![],
                condition: None,
                tracking_info: Some(v1::TrackingInfo {
                    source: "s".repeat(70_000),
                    position: 1,
                }),
            },
            Code::InvalidArgument,
            "",
        ),
    ];
    for (case, request, code, mention) in table {
        let mut client = server.client().await;
        let status = append(&mut client, request)
            .await
            .expect_err(&format!("{case}: must be refused"));
        let details = error_details(&status, code);
        assert!(
            details.message.contains(mention),
            "{case}: the message should mention {mention:?}: {}",
            details.message
        );
        assert!(details.message.len() < 2_000, "{case}: a short message");
        assert_untouched_and_serving(&server, case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_but_valid_requests_get_bounded_correct_answers() {
    let server = seeded_server().await;
    let mut client = server.client().await;
    let ten_thousand_items: Vec<v1::QueryItem> = (0..10_000)
        .map(|i| item(&["Seed"], &[&format!("s{i}")]))
        .collect();
    let read = |query: Option<v1::Query>, start, backwards, limit, batch_size| v1::ReadRequest {
        query,
        start,
        backwards: Some(backwards),
        limit,
        subscribe: None,
        batch_size,
    };
    // (case, request, expected positions)
    let table: Vec<(&str, v1::ReadRequest, Vec<u64>)> = vec![
        ("limit 0", read(None, None, false, Some(0), None), vec![]),
        (
            "limit u32::MAX",
            read(None, None, false, Some(u32::MAX), None),
            (1..=SEEDED).collect(),
        ),
        (
            "batch_size 0",
            read(None, None, false, None, Some(0)),
            (1..=SEEDED).collect(),
        ),
        (
            "batch_size u32::MAX",
            read(None, None, false, None, Some(u32::MAX)),
            (1..=SEEDED).collect(),
        ),
        (
            "start beyond head",
            read(None, Some(SEEDED + 1), false, None, None),
            vec![],
        ),
        (
            "start u64::MAX",
            read(None, Some(u64::MAX), false, None, None),
            vec![],
        ),
        (
            "backwards from u64::MAX",
            read(None, Some(u64::MAX), true, None, None),
            (1..=SEEDED).rev().collect(),
        ),
        (
            "a query with 10,000 items",
            read(
                Some(v1::Query {
                    items: ten_thousand_items.clone(),
                }),
                None,
                false,
                None,
                None,
            ),
            (1..=SEEDED).collect(),
        ),
    ];
    for (case, request, expected) in table {
        let (events, _) = read_all(&mut client, request)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(positions(&events), expected, "{case}");
    }
    // Subscriptions after u64::MAX or beyond the head wait quietly for events that never come.
    for after in [SEEDED + 5, u64::MAX] {
        let mut stream = client
            .subscribe(v1::SubscribeRequest {
                query: None,
                after: Some(after),
                batch_size: Some(u32::MAX),
            })
            .await
            .expect("subscribe")
            .into_inner();
        let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
        assert!(
            next.is_err(),
            "after {after}: nothing to deliver, got {next:?}"
        );
    }
    // A condition with 10,000 items is evaluated, and a condition after u64::MAX passes.
    let status = append(
        &mut client,
        conditional(
            vec![event("E", &[], b"")],
            Some(v1::Query {
                items: ten_thousand_items,
            }),
            None,
        ),
    )
    .await
    .expect_err("the condition matches the seeded events");
    assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
    assert_untouched_and_serving(&server, "after the extreme reads").await;
    let position = append(
        &mut client,
        conditional(vec![event("E", &[], b"")], None, Some(u64::MAX)),
    )
    .await
    .expect("nothing can match after u64::MAX");
    assert_eq!(position, SEEDED + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_events_in_one_append_are_accepted_atomically() {
    let server = seeded_server().await;
    let mut client = server.client().await;
    let position = append(&mut client, append_request(many_events(100_000)))
        .await
        .expect("the limit itself is accepted");
    assert_eq!(position, SEEDED + 100_000);
}

/// Sends raw bytes as a request to a DCB method (unary methods only).
async fn send_raw_unary(server: &TestServer, method: &str, bytes: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let path = format!("/umadb.v1.DCB/{method}").parse().expect("path");
    match grpc
        .unary(tonic::Request::new(bytes), path, common::RawCodec)
        .await
    {
        Err(status) => status,
        Ok(response) => panic!("{method} accepted {:?}", response.into_inner()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_strings_is_refused_and_touches_nothing() {
    let server = seeded_server().await;
    // An Event whose event_type (field 1) holds bytes that are not UTF-8, inside an
    // AppendRequest (field 1); likewise a tag (Event field 2) and a tracking source.
    let bad = [0xC3u8, 0x28, 0xFF];
    let mut event_bytes = vec![0x0A, bad.len() as u8];
    event_bytes.extend_from_slice(&bad);
    let mut bad_type = vec![0x0A, event_bytes.len() as u8];
    bad_type.extend_from_slice(&event_bytes);
    let mut tag_bytes = vec![0x0A, 1, b'E', 0x12, bad.len() as u8];
    tag_bytes.extend_from_slice(&bad);
    let mut bad_tag = vec![0x0A, tag_bytes.len() as u8];
    bad_tag.extend_from_slice(&tag_bytes);
    let mut bad_source = vec![0x0A, bad.len() as u8];
    bad_source.extend_from_slice(&bad);
    for (case, method, bytes) in [
        ("event type", "Append", bad_type),
        ("tag", "Append", bad_tag),
        ("tracking source", "GetTrackingInfo", bad_source),
    ] {
        let status = send_raw_unary(&server, method, bytes).await;
        assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
        assert_untouched_and_serving(&server, case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_garbage_http2_frames_drop_only_that_connection() {
    let server = seeded_server().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // A SETTINGS frame header announcing 60 bytes of payload, then only 3 of them.
    let mut truncated = preface.to_vec();
    truncated.extend_from_slice(&[0, 0, 60, 4, 0, 0, 0, 0, 0, 1, 2, 3]);
    // A HEADERS frame on stream 1 with a length far beyond the frame size limit.
    let mut oversized = preface.to_vec();
    oversized.extend_from_slice(&[0xFF, 0xFF, 0xFF, 1, 4, 0, 0, 0, 1]);
    let table: Vec<(&str, Vec<u8>)> = vec![
        ("truncated SETTINGS frame", truncated),
        ("oversized HEADERS frame", oversized),
        ("the preface cut short", preface[..10].to_vec()),
        ("garbage instead of HTTP/2", vec![0xAB; 4096]),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (case, bytes) in table {
        let mut tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        tcp.write_all(&bytes).await.expect("write");
        if case.contains("truncated") || case.contains("cut short") {
            // Hang up mid-frame.
            drop(tcp);
        } else {
            // The server answers with an error or closes; either way the read ends.
            let mut buffer = vec![0u8; 4096];
            let read = tokio::time::timeout(WAIT, async {
                loop {
                    match tcp.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    }
                }
            })
            .await;
            assert!(
                read.is_ok(),
                "{case}: the server kept a broken connection open"
            );
        }
        assert_untouched_and_serving(&server, case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_opening_1000_streams_it_never_reads_does_not_disturb_others() {
    let server = seeded_server().await;
    // Large events so that unread streams fill their flow-control windows.
    let mut writer = server.client().await;
    let data = vec![1u8; 32 * 1024];
    append(
        &mut writer,
        append_request((0..20).map(|_| event("Big", &[], &data)).collect()),
    )
    .await
    .unwrap();
    let greedy = server.client().await;
    let mut streams = Vec::new();
    for i in 0..1000 {
        let mut client = greedy.clone();
        let stream = if i % 2 == 0 {
            client
                .read(v1::ReadRequest::default())
                .await
                .map(|r| Box::new(r.into_inner()) as Box<dyn Send>)
        } else {
            client
                .subscribe(v1::SubscribeRequest::default())
                .await
                .map(|r| Box::new(r.into_inner()) as Box<dyn Send>)
        };
        streams.push(stream.unwrap_or_else(|e| panic!("stream {i}: {e:?}")));
    }
    // Others are served promptly meanwhile.
    let mut other = server.client().await;
    let position = tokio::time::timeout(
        WAIT,
        append(&mut other, append_request(vec![event("E", &[], b"")])),
    )
    .await
    .expect("an append was held up by unread streams")
    .unwrap();
    assert_eq!(position, SEEDED + 21);
    let (events, _) = tokio::time::timeout(WAIT, read_all(&mut other, v1::ReadRequest::default()))
        .await
        .expect("a read was held up by unread streams")
        .unwrap();
    assert_eq!(events.len() as u64, SEEDED + 21);
    drop(streams);
    let head = other.head(v1::HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.position, Some(SEEDED + 21));
}
