//! Every RPC and every semantic rule of DESIGN.md, driven over gRPC against a real server.

mod common;

use common::*;
use prost::Message;
use std::time::Duration;
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::error_response::ErrorType;

fn read(query: Option<v1::Query>) -> v1::ReadRequest {
    v1::ReadRequest {
        query,
        ..Default::default()
    }
}

async fn seeded() -> (
    TestServer,
    umadb_proto::v1::dcb_client::DcbClient<tonic::transport::Channel>,
) {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // 1 A[x]  2 B[x,y]  3 A[y]  4 C[]  5 B[y]
    for (t, tags) in [
        ("A", vec!["x"]),
        ("B", vec!["x", "y"]),
        ("A", vec!["y"]),
        ("C", vec![]),
        ("B", vec!["y"]),
    ] {
        append(
            &mut client,
            append_request(vec![event(t, &tags, t.as_bytes())]),
        )
        .await
        .expect("append");
    }
    (server, client)
}

// ---- Append and Head --------------------------------------------------------------------

#[tokio::test]
async fn positions_start_at_one_and_each_append_returns_its_last_position() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
    let p = append(&mut client, append_request(vec![event("A", &[], b"1")]))
        .await
        .unwrap();
    assert_eq!(p, 1);
    let three = vec![
        event("A", &[], b"2"),
        event("B", &[], b"3"),
        event("C", &[], b"4"),
    ];
    assert_eq!(append(&mut client, append_request(three)).await.unwrap(), 4);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(4)
    );
    let (events, head) = read_all(&mut client, read(None)).await.unwrap();
    assert_eq!(positions(&events), vec![1, 2, 3, 4]);
    let data: Vec<_> = events
        .iter()
        .map(|e| e.event.clone().unwrap().data)
        .collect();
    assert_eq!(
        data,
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );
    assert_eq!(head, Some(4));
}

#[tokio::test]
async fn events_round_trip_byte_for_byte() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let sent = v1::Event {
        event_type: "Ünïcode type ✓".into(),
        tags: vec!["tag:1".into(), "".into(), "tag with spaces".into()],
        data: (0..=255u8).collect(),
        uuid: "6ba7b810-9dad-11d1-80b4-00c04fd430c8".into(),
        metadata: vec![
            v1::MetadataEntry {
                key: "b".into(),
                value: "2".into(),
            },
            v1::MetadataEntry {
                key: "a".into(),
                value: "".into(),
            },
        ],
    };
    let mut request = append_request(vec![sent.clone()]);
    request.tracking_info = Some(v1::TrackingInfo {
        source: "upstream".into(),
        position: 9,
    });
    append(&mut client, request).await.unwrap();
    let (events, _) = read_all(&mut client, read(None)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_ref(), Some(&sent));
    assert_eq!(
        events[0].tracking_info,
        Some(v1::TrackingInfo {
            source: "upstream".into(),
            position: 9
        })
    );
}

#[tokio::test]
async fn an_append_of_zero_events_returns_zero_and_still_records_tracking_info() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut request = append_request(vec![]);
    request.tracking_info = Some(v1::TrackingInfo {
        source: "s".into(),
        position: 5,
    });
    assert_eq!(append(&mut client, request.clone()).await.unwrap(), 0);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
    let tracked = client
        .get_tracking_info(v1::TrackingRequest { source: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tracked.position, Some(5));
    // Still enforced: the same position again is not greater than the recorded one.
    let status = append(&mut client, request).await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
}

#[tokio::test]
async fn tracking_positions_must_increase_and_are_reported_per_source() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let tracked = |source: &str, position| {
        let mut request = append_request(vec![event("E", &[], b"")]);
        request.tracking_info = Some(v1::TrackingInfo {
            source: source.into(),
            position,
        });
        request
    };
    append(&mut client, tracked("a", 10)).await.unwrap();
    append(&mut client, tracked("b", 3)).await.unwrap();
    for position in [10, 9] {
        let status = append(&mut client, tracked("a", position))
            .await
            .unwrap_err();
        let message = assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
        assert!(
            message.contains('a') || message.contains("tracking"),
            "{message}"
        );
    }
    append(&mut client, tracked("a", 11)).await.unwrap();
    let get = |source: &str| v1::TrackingRequest {
        source: source.into(),
    };
    assert_eq!(
        client
            .get_tracking_info(get("a"))
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(11)
    );
    assert_eq!(
        client
            .get_tracking_info(get("b"))
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(3)
    );
    assert_eq!(
        client
            .get_tracking_info(get("none"))
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
    let long_source = "s".repeat(100_000);
    assert_eq!(
        client
            .get_tracking_info(get(&long_source))
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
    // The failed appends wrote nothing.
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(3)
    );
}

// ---- Conditions and idempotency -----------------------------------------------------------

#[tokio::test]
async fn condition_fails_with_integrity_details_when_a_matching_event_is_after_the_position() {
    let (_server, mut client) = seeded().await;
    let boundary = query(vec![item(&["A"], &["y"])]); // matches position 3
    let status = append(
        &mut client,
        conditional(vec![event("A", &["y"], b"")], boundary.clone(), Some(2)),
    )
    .await
    .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
    let status = append(
        &mut client,
        conditional(vec![event("A", &["y"], b"")], boundary.clone(), None),
    )
    .await
    .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(5)
    );
    // Matching events at or before `after` do not fail it.
    let p = append(
        &mut client,
        conditional(vec![event("A", &["y"], b"")], boundary, Some(3)),
    )
    .await
    .unwrap();
    assert_eq!(p, 6);
}

#[tokio::test]
async fn condition_passes_when_nothing_matches() {
    let (_server, mut client) = seeded().await;
    let nothing = query(vec![item(&["Z"], &[])]);
    let p = append(
        &mut client,
        conditional(vec![event("Z", &[], b"")], nothing, None),
    )
    .await
    .unwrap();
    assert_eq!(p, 6);
}

#[tokio::test]
async fn an_idempotent_retry_succeeds_without_writing_and_returns_the_recorded_position() {
    let (_server, mut client) = seeded().await;
    let boundary = query(vec![item(&["Order"], &["order:1"])]);
    let mut first = event("Order", &["order:1"], b"placed");
    first.uuid = "11111111-1111-1111-1111-111111111111".into();
    let mut second = event("Order", &["order:1"], b"paid");
    second.uuid = "22222222-2222-2222-2222-222222222222".into();
    let request = conditional(vec![first, second], boundary, Some(5));
    assert_eq!(append(&mut client, request.clone()).await.unwrap(), 7);
    assert_eq!(append(&mut client, request).await.unwrap(), 7);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(7)
    );
}

#[tokio::test]
async fn the_nil_uuid_is_not_an_idempotency_key() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let boundary = query(vec![item(&["E"], &[])]);
    let mut e = event("E", &[], b"");
    e.uuid = "00000000-0000-0000-0000-000000000000".into();
    append(
        &mut client,
        conditional(vec![e.clone()], boundary.clone(), None),
    )
    .await
    .unwrap();
    let status = append(&mut client, conditional(vec![e], boundary, None))
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, ErrorType::Integrity);
}

// ---- Bad input -------------------------------------------------------------------------------

#[tokio::test]
async fn strings_up_to_65535_bytes_work_and_longer_ones_are_invalid_and_write_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let max = "x".repeat(65_535);
    let mut e = event(&max, &[&max], b"");
    e.metadata = vec![v1::MetadataEntry {
        key: max.clone(),
        value: max.clone(),
    }];
    assert_eq!(
        append(&mut client, append_request(vec![e.clone()]))
            .await
            .unwrap(),
        1
    );
    let (events, _) = read_all(&mut client, read(query(vec![item(&[&max], &[&max])])))
        .await
        .unwrap();
    assert_eq!(events[0].event.as_ref(), Some(&e));

    let long = "x".repeat(65_536);
    let too_long = [
        event(&long, &[], b""),
        event("T", &[&long], b""),
        v1::Event {
            metadata: vec![v1::MetadataEntry {
                key: long.clone(),
                value: String::new(),
            }],
            ..event("T", &[], b"")
        },
        v1::Event {
            metadata: vec![v1::MetadataEntry {
                key: "k".into(),
                value: long.clone(),
            }],
            ..event("T", &[], b"")
        },
    ];
    for bad in too_long {
        let request = append_request(vec![event("ok", &[], b""), bad]);
        let status = append(&mut client, request).await.unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
        assert!(
            message.contains("65535") || message.contains("65,535"),
            "{message}"
        );
    }
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(1)
    );
}

#[tokio::test]
async fn an_invalid_uuid_text_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut e = event("E", &[], b"");
    e.uuid = "not-a-uuid".into();
    let status = append(&mut client, append_request(vec![e]))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
    assert!(message.contains("uuid"), "{message}");
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
}

#[tokio::test]
async fn too_many_events_in_one_append_is_invalid_argument() {
    let server = TestServer::start_with(|c| c.limits = small_limits()).await;
    let mut client = server.client().await;
    let events = |n| (0..n).map(|_| event("E", &[], b"")).collect::<Vec<_>>();
    assert_eq!(
        append(&mut client, append_request(events(10)))
            .await
            .unwrap(),
        10
    );
    let status = append(&mut client, append_request(events(11)))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
    assert!(
        message.contains("11") && message.contains("10"),
        "{message}"
    );
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(10)
    );
}

#[tokio::test]
async fn an_oversized_request_is_invalid_argument_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.limits.max_message_bytes = 1024 * 1024).await;
    let mut client = server.client().await;
    let big = vec![0u8; 2 * 1024 * 1024];
    let status = append(&mut client, append_request(vec![event("Big", &[], &big)]))
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
    assert!(message.contains("1048576"), "{message}");
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        None
    );
    assert_eq!(
        append(&mut client, append_request(vec![event("Small", &[], b"")]))
            .await
            .unwrap(),
        1
    );
}

/// Sends raw bytes as the request message of a DCB method.
async fn send_raw(server: &TestServer, method: &str, bytes: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let path = format!("/umadb.v1.DCB/{method}").parse().expect("path");
    if method == "Read" || method == "Subscribe" {
        match grpc
            .server_streaming(tonic::Request::new(bytes), path, common::RawCodec)
            .await
        {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Err(status) => status,
                    Ok(m) => panic!("garbage {method} request was accepted: {m:?}"),
                }
            }
        }
    } else {
        match grpc
            .unary(tonic::Request::new(bytes), path, common::RawCodec)
            .await
        {
            Err(status) => status,
            Ok(response) => panic!(
                "garbage {method} request was accepted: {:?}",
                response.into_inner()
            ),
        }
    }
}

#[tokio::test]
async fn garbage_and_truncated_messages_are_refused_and_touch_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    append(
        &mut client,
        append_request(vec![event("E", &["t"], b"kept")]),
    )
    .await
    .unwrap();
    let valid = append_request(vec![event("E", &["t"], &[7; 100])]).encode_to_vec();
    let truncated = valid[..valid.len() / 2].to_vec();
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    for method in ["Append", "Read", "Subscribe", "GetTrackingInfo"] {
        for bytes in [garbage.clone(), truncated.clone()] {
            let status = send_raw(&server, method, bytes).await;
            let message = assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
            assert!(message.contains("not a valid"), "{message}");
        }
    }
    let (events, head) = read_all(&mut client, read(None)).await.unwrap();
    assert_eq!(positions(&events), vec![1]);
    assert_eq!(head, Some(1));
}

#[tokio::test]
async fn an_invalid_query_is_refused_before_the_stream_starts() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let long = "t".repeat(65_536);
    let bad = query(vec![item(&[], &[&long])]);
    let status = client.read(read(bad.clone())).await.unwrap_err();
    assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
    let status = client
        .subscribe(v1::SubscribeRequest {
            query: bad,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
}

// ---- Queries -------------------------------------------------------------------------------

#[tokio::test]
async fn queries_match_by_type_or_and_all_tags_and_items_are_ored() {
    let (_server, mut client) = seeded().await;
    let cases: Vec<(Option<v1::Query>, Vec<u64>)> = vec![
        (None, vec![1, 2, 3, 4, 5]),
        (query(vec![]), vec![1, 2, 3, 4, 5]),
        (query(vec![item(&[], &[])]), vec![1, 2, 3, 4, 5]),
        (query(vec![item(&["A"], &[])]), vec![1, 3]),
        (query(vec![item(&["A", "C"], &[])]), vec![1, 3, 4]),
        (query(vec![item(&[], &["y"])]), vec![2, 3, 5]),
        (query(vec![item(&[], &["x", "y"])]), vec![2]),
        (query(vec![item(&["B"], &["y"])]), vec![2, 5]),
        (
            query(vec![item(&["A"], &["x"]), item(&["B"], &["x"])]),
            vec![1, 2],
        ),
        (
            query(vec![item(&["A"], &["x"]), item(&[], &["y"])]),
            vec![1, 2, 3, 5],
        ),
        (query(vec![item(&["Nope"], &[])]), vec![]),
        (query(vec![item(&[], &["nope"])]), vec![]),
    ];
    for (q, expected) in cases {
        let (events, _) = read_all(&mut client, read(q.clone())).await.unwrap();
        assert_eq!(positions(&events), expected, "query {q:?}");
    }
}

// ---- Read --------------------------------------------------------------------------------

#[tokio::test]
async fn read_honours_start_direction_and_limit() {
    let (_server, mut client) = seeded().await;
    let r = |start, backwards, limit| v1::ReadRequest {
        start,
        backwards: Some(backwards),
        limit,
        ..Default::default()
    };
    let cases: Vec<(v1::ReadRequest, Vec<u64>)> = vec![
        (r(Some(3), false, None), vec![3, 4, 5]),
        (r(Some(0), false, None), vec![1, 2, 3, 4, 5]),
        (r(Some(6), false, None), vec![]),
        (r(None, true, None), vec![5, 4, 3, 2, 1]),
        (r(Some(3), true, None), vec![3, 2, 1]),
        (r(Some(0), true, None), vec![]),
        (r(Some(99), true, None), vec![5, 4, 3, 2, 1]),
        (r(None, false, Some(2)), vec![1, 2]),
        (r(None, true, Some(2)), vec![5, 4]),
        (r(Some(2), false, Some(2)), vec![2, 3]),
        (r(None, false, Some(0)), vec![]),
    ];
    for (request, expected) in cases {
        let (events, _) = read_all(&mut client, request.clone()).await.unwrap();
        assert_eq!(positions(&events), expected, "{request:?}");
    }
}

#[tokio::test]
async fn read_head_is_the_store_head_without_a_limit_and_the_last_returned_with_one() {
    let (_server, mut client) = seeded().await;
    let only_a = query(vec![item(&["A"], &[])]);
    let heads = |messages: &[v1::ReadResponse]| messages.iter().map(|m| m.head).collect::<Vec<_>>();

    let messages = read_messages(&mut client, read(only_a.clone()))
        .await
        .unwrap();
    assert!(heads(&messages).iter().all(|h| *h == Some(5)));

    let limited = v1::ReadRequest {
        query: only_a.clone(),
        limit: Some(1),
        ..Default::default()
    };
    let messages = read_messages(&mut client, limited).await.unwrap();
    assert_eq!(heads(&messages).last(), Some(&Some(1)));

    let backwards = v1::ReadRequest {
        query: only_a.clone(),
        limit: Some(1),
        backwards: Some(true),
        ..Default::default()
    };
    let messages = read_messages(&mut client, backwards).await.unwrap();
    assert_eq!(heads(&messages).last(), Some(&Some(3)));

    // Nothing returned: one message, no events, and the head.
    let nothing = query(vec![item(&["Nope"], &[])]);
    let messages = read_messages(&mut client, read(nothing.clone()))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].events.is_empty());
    assert_eq!(messages[0].head, Some(5));
    let limited_nothing = v1::ReadRequest {
        query: nothing,
        limit: Some(3),
        ..Default::default()
    };
    let messages = read_messages(&mut client, limited_nothing).await.unwrap();
    assert_eq!(heads(&messages), vec![None]);

    // limit = 0: no events and head none.
    let zero = v1::ReadRequest {
        limit: Some(0),
        ..Default::default()
    };
    let messages = read_messages(&mut client, zero).await.unwrap();
    assert!(messages.iter().all(|m| m.events.is_empty()));
    assert_eq!(heads(&messages), vec![None]);
}

#[tokio::test]
async fn an_empty_store_reads_nothing_with_head_none() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let messages = read_messages(&mut client, read(None)).await.unwrap();
    assert_eq!(
        messages,
        vec![v1::ReadResponse {
            events: vec![],
            head: None
        }]
    );
}

#[tokio::test]
async fn a_read_in_batches_returns_only_events_recorded_when_it_began() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let events = (0..5).map(|i| event("E", &[], &[i])).collect();
    append(&mut client, append_request(events)).await.unwrap();
    let request = v1::ReadRequest {
        batch_size: Some(1),
        ..Default::default()
    };
    let mut stream = client.read(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(positions(&first.events), vec![1]);
    let mut writer = server.client().await;
    append(&mut writer, append_request(vec![event("Late", &[], b"")]))
        .await
        .unwrap();
    let mut all = first.events;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.head, Some(5));
        assert!(message.events.len() <= 1);
        all.extend(message.events);
    }
    assert_eq!(positions(&all), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn batch_size_zero_uses_the_default_and_large_sizes_are_capped() {
    let server = TestServer::start_with(|c| c.limits = small_limits()).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        let events = (0..10).map(|_| event("E", &[], b"")).collect();
        append(&mut client, append_request(events)).await.unwrap();
    }
    let sizes = |messages: Vec<v1::ReadResponse>| {
        messages.iter().map(|m| m.events.len()).collect::<Vec<_>>()
    };
    for (batch_size, largest) in [(None, 3), (Some(0), 3), (Some(2), 2), (Some(1000), 5)] {
        let request = v1::ReadRequest {
            batch_size,
            ..Default::default()
        };
        let sizes = sizes(read_messages(&mut client, request).await.unwrap());
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert_eq!(
            sizes.iter().max(),
            Some(&largest),
            "batch size {batch_size:?}: {sizes:?}"
        );
    }
    let request = v1::SubscribeRequest {
        batch_size: Some(1000),
        ..Default::default()
    };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    let mut received = 0;
    while received < 20 {
        let message = stream.message().await.unwrap().unwrap();
        assert!(message.events.len() <= 5);
        received += message.events.len();
    }
}

#[tokio::test]
async fn messages_stay_under_4_mib_and_an_event_larger_than_that_goes_alone() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mib = vec![1u8; 1024 * 1024];
    for _ in 0..3 {
        let events = (0..4).map(|_| event("Big", &[], &mib)).collect();
        append(&mut client, append_request(events)).await.unwrap();
    }
    let huge = vec![2u8; 5 * 1024 * 1024];
    append(&mut client, append_request(vec![event("Huge", &[], &huge)]))
        .await
        .unwrap();
    append(&mut client, append_request(vec![event("Small", &[], b"")]))
        .await
        .unwrap();

    let messages = read_messages(&mut client, read(None)).await.unwrap();
    let all: Vec<_> = messages.iter().flat_map(|m| m.events.clone()).collect();
    assert_eq!(positions(&all), (1..=14).collect::<Vec<_>>());
    for message in &messages {
        let has_huge = message.events.iter().any(|e| e.position == 13);
        if has_huge {
            assert_eq!(message.events.len(), 1, "the huge event goes alone");
        } else {
            assert!(
                message.encoded_len() < 4 * 1024 * 1024,
                "message of {} bytes",
                message.encoded_len()
            );
        }
    }

    // Subscriptions are cut the same way; a client with the default 4 MiB limit reads the
    // small ones.
    let mut default_client = umadb_proto::v1::dcb_client::DcbClient::new(server.channel().await);
    let only_big = query(vec![item(&["Big"], &[])]);
    let request = v1::SubscribeRequest {
        query: only_big.clone(),
        ..Default::default()
    };
    let mut stream = default_client
        .subscribe(request)
        .await
        .unwrap()
        .into_inner();
    let events = receive(&mut stream, 12).await;
    assert_eq!(positions(&events), (1..=12).collect::<Vec<_>>());
    let (events, _) = read_all(&mut client, read(only_big)).await.unwrap();
    assert_eq!(events.len(), 12);
}

// ---- Subscribe ----------------------------------------------------------------------------

#[tokio::test]
async fn subscribe_delivers_recorded_then_new_matching_events_after_the_position() {
    let (server, mut client) = seeded().await;
    let only_y = query(vec![item(&[], &["y"])]);
    let request = v1::SubscribeRequest {
        query: only_y,
        after: Some(2),
        batch_size: None,
    };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    assert_eq!(positions(&receive(&mut stream, 2).await), vec![3, 5]);
    let mut writer = server.client().await;
    append(
        &mut writer,
        append_request(vec![event("N", &["z"], b""), event("N", &["y"], b"")]),
    )
    .await
    .unwrap();
    append(
        &mut writer,
        append_request(vec![event("N", &["y", "z"], b"")]),
    )
    .await
    .unwrap();
    assert_eq!(positions(&receive(&mut stream, 2).await), vec![7, 8]);
}

#[tokio::test]
async fn a_subscription_returns_its_headers_at_once_even_when_nothing_matches() {
    let (_server, mut client) = seeded().await;
    let nothing = query(vec![item(&["Nothing"], &[])]);
    let request = v1::SubscribeRequest {
        query: nothing.clone(),
        ..Default::default()
    };
    let response = tokio::time::timeout(Duration::from_secs(5), client.subscribe(request))
        .await
        .expect("subscribe returned its headers promptly")
        .unwrap();
    let mut stream = response.into_inner();
    // And nothing arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.message())
            .await
            .is_err()
    );

    let request = v1::ReadRequest {
        query: nothing,
        subscribe: Some(true),
        ..Default::default()
    };
    tokio::time::timeout(Duration::from_secs(5), client.read(request))
        .await
        .expect("read with subscribe returned its headers promptly")
        .unwrap();
}

#[tokio::test]
async fn read_with_subscribe_behaves_like_subscribe_from_start() {
    let (server, mut client) = seeded().await;
    let only_b = query(vec![item(&["B"], &[])]);
    let request = v1::ReadRequest {
        query: only_b.clone(),
        start: Some(3),
        subscribe: Some(true),
        ..Default::default()
    };
    let mut stream = client.read(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(positions(&first.events), vec![5]);
    assert_eq!(first.head, Some(5));
    let mut writer = server.client().await;
    append(
        &mut writer,
        append_request(vec![event("B", &[], b""), event("A", &[], b"")]),
    )
    .await
    .unwrap();
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(positions(&next.events), vec![6]);

    // A limit ends it; backwards makes no sense.
    let limited = v1::ReadRequest {
        query: only_b.clone(),
        subscribe: Some(true),
        limit: Some(2),
        ..Default::default()
    };
    let (events, _) = read_all(&mut client, limited).await.unwrap();
    assert_eq!(positions(&events), vec![2, 5]);
    let backwards = v1::ReadRequest {
        query: only_b,
        subscribe: Some(true),
        backwards: Some(true),
        ..Default::default()
    };
    let status = client.read(backwards).await.unwrap_err();
    assert_error(&status, Code::InvalidArgument, ErrorType::InvalidArgument);
}

#[tokio::test]
async fn a_subscription_keeps_working_with_client_keepalive_pings() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .http2_keep_alive_interval(Duration::from_millis(100))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .unwrap();
    let mut client = umadb_proto::v1::dcb_client::DcbClient::new(channel);
    let mut stream = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(
        &mut server.client().await,
        append_request(vec![event("E", &[], b"")]),
    )
    .await
    .unwrap();
    assert_eq!(positions(&receive(&mut stream, 1).await), vec![1]);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(1)
    );
}

#[tokio::test]
async fn cancelled_subscriptions_do_not_disturb_others() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for _ in 0..20 {
        let stream = client
            .subscribe(v1::SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner();
        drop(stream);
    }
    let mut kept = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    append(&mut client, append_request(vec![event("E", &[], b"")]))
        .await
        .unwrap();
    assert_eq!(positions(&receive(&mut kept, 1).await), vec![1]);
}

// ---- Shutdown and health ---------------------------------------------------------------------

#[tokio::test]
async fn shutdown_ends_subscriptions_cleanly_and_cuts_reads_short_with_unavailable() {
    let mut server = TestServer::start().await;
    let mut client = server.client().await;
    // More data than the transport buffers, so the read below cannot finish unread.
    let chunk = vec![3u8; 64 * 1024];
    for _ in 0..20 {
        let events = (0..10).map(|_| event("E", &[], &chunk)).collect();
        append(&mut client, append_request(events)).await.unwrap();
    }
    let only_new = query(vec![item(&["New"], &[])]);
    let request = v1::SubscribeRequest {
        query: only_new,
        ..Default::default()
    };
    let mut subscription = client.subscribe(request).await.unwrap().into_inner();
    // A read whose client stops reading after its first message.
    let request = v1::ReadRequest {
        batch_size: Some(1),
        ..Default::default()
    };
    let mut read = client.read(request).await.unwrap().into_inner();
    read.message().await.unwrap().unwrap();

    let running = server.server.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());

    // The subscription ends cleanly; by then the server has told its streams to stop.
    let end = tokio::time::timeout(WAIT, subscription.message())
        .await
        .expect("ends");
    assert!(matches!(end, Ok(None)), "subscription ended with {end:?}");
    let mut received = 1;
    let status = loop {
        match tokio::time::timeout(WAIT, read.message())
            .await
            .expect("ends")
        {
            Ok(Some(message)) => received += message.events.len(),
            Ok(None) => panic!("an interrupted read must not look complete ({received} of 200)"),
            Err(status) => break status,
        }
    };
    assert!(received < 200);
    let message = assert_error(&status, Code::Unavailable, ErrorType::Io);
    assert!(message.contains("shutting down"), "{message}");
    // A condition of the connection, not a failure of the server's disk.
    assert_eq!(
        umadb_proto::error_from_status(&status),
        umadb_core::Error::Transport(message)
    );
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown is prompt")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn health_reports_serving_and_then_not_serving_while_shutting_down() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut server = TestServer::start_with(|c| {
        c.api_keys = vec!["k".into()];
        c.limits.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "umadb.v1.DCB"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health needs no API key")
            .into_inner();
        assert_eq!(response.status, ServingStatus::Serving as i32);
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "umadb.v1.DCB".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    server.shutdown().await;
    let mut statuses = Vec::new();
    while let Ok(Ok(Some(message))) = tokio::time::timeout(WAIT, watch.message()).await {
        statuses.push(message.status);
    }
    assert!(
        statuses.contains(&(ServingStatus::NotServing as i32)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_store_is_reopened_with_its_events_after_shutdown() {
    let mut server = TestServer::start().await;
    let path = server.dir.path().join("db");
    let mut client = server.client().await;
    append(
        &mut client,
        append_request(vec![event("E", &[], b"1"), event("E", &[], b"2")]),
    )
    .await
    .unwrap();
    server.shutdown().await;
    let reopened = umadb_server::start(umadb_server::ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &path,
    ))
    .await
    .unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", reopened.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = umadb_proto::v1::dcb_client::DcbClient::new(channel);
    assert_eq!(
        client
            .head(v1::HeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .position,
        Some(2)
    );
    reopened.shutdown().await.unwrap();
}

#[tokio::test]
async fn starting_on_a_busy_address_fails_clearly() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let result = umadb_server::start(umadb_server::ServerConfig::new(
        server.addr(),
        dir.path().join("db"),
    ))
    .await;
    let error = result.err().expect("second bind fails");
    assert!(
        error.to_string().contains(&server.addr().to_string()),
        "{error}"
    );
}
