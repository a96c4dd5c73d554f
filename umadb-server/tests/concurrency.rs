//! Many clients at once: conditional appends on shared boundaries, subscriptions fed by several
//! writers, and a stalled subscriber that must not hold anyone up.

mod common;

use common::*;
use std::collections::HashMap;
use tonic::Code;
use umadb_proto::v1;

const CLIENTS: usize = 100;
const BOUNDARIES: usize = 5;
const APPENDS_PER_CLIENT: usize = 3;

/// Each client reads its boundary, then appends on condition that nothing matching was
/// recorded after the head it read, retrying on integrity errors. The event's data records the
/// head the condition was made against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_then_conditional_append_is_gapless_and_never_double_accepts() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut tasks = Vec::new();
    for client_id in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .expect("connect");
            let mut client = umadb_proto::v1::dcb_client::DcbClient::new(channel);
            let tag = format!("boundary:{}", client_id % BOUNDARIES);
            let boundary = query(vec![item(&[], &[&tag])]);
            let mut accepted = Vec::new();
            let mut rejections = 0;
            while accepted.len() < APPENDS_PER_CLIENT {
                let request = v1::ReadRequest {
                    query: boundary.clone(),
                    ..Default::default()
                };
                let (_, head) = read_all(&mut client, request).await.expect("read");
                let after = head.unwrap_or(0);
                let data = format!("{client_id}:{after}").into_bytes();
                let request = conditional(
                    vec![event("Claimed", &[&tag], &data)],
                    boundary.clone(),
                    head,
                );
                match append(&mut client, request).await {
                    Ok(position) => accepted.push((position, after)),
                    Err(status) if status.code() == Code::FailedPrecondition => rejections += 1,
                    Err(status) => panic!("append failed: {status:?}"),
                }
            }
            (client_id, accepted, rejections)
        }));
    }
    let mut acknowledged: HashMap<u64, (usize, u64)> = HashMap::new();
    let mut rejected = 0;
    for task in tasks {
        let (client_id, accepted, rejections) = task.await.expect("client task");
        rejected += rejections;
        for (position, after) in accepted {
            assert!(
                acknowledged.insert(position, (client_id, after)).is_none(),
                "position {position} acknowledged twice"
            );
        }
    }
    let total = (CLIENTS * APPENDS_PER_CLIENT) as u64;
    assert_eq!(acknowledged.len() as u64, total);
    eprintln!("{total} conditional appends accepted, {rejected} rejected by a concurrent one");

    let mut client = server.client().await;
    let (events, head) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .unwrap();
    assert_eq!(head, Some(total));
    assert_eq!(
        positions(&events),
        (1..=total).collect::<Vec<_>>(),
        "gapless"
    );

    let mut last_in_boundary: HashMap<String, u64> = HashMap::new();
    for recorded in &events {
        let e = recorded.event.as_ref().unwrap();
        let (client_id, after) = acknowledged[&recorded.position];
        assert_eq!(e.data, format!("{client_id}:{after}").into_bytes());
        let tag = &e.tags[0];
        assert_eq!(tag, &format!("boundary:{}", client_id % BOUNDARIES));
        // The condition held: no event of this boundary lies between `after` and this one.
        let previous = last_in_boundary.get(tag).copied().unwrap_or(0);
        assert!(
            previous <= after,
            "event {} in {tag} was accepted against head {after}, but {previous} matched after it",
            recorded.position
        );
        last_in_boundary.insert(tag.clone(), recorded.position);
    }
}

/// Several writers append a mix of matching and non-matching events while subscriptions run:
/// each subscription receives exactly the matching events, in order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_receive_exactly_the_matching_events_from_concurrent_writers() {
    const WRITERS: usize = 4;
    const APPENDS: usize = 60;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let wanted = query(vec![item(&["Wanted"], &[]), item(&[], &["flag"])]);
    let subscribe = |after| v1::SubscribeRequest {
        query: wanted.clone(),
        after,
        batch_size: Some(7),
    };
    let mut from_start = client
        .subscribe(subscribe(None))
        .await
        .unwrap()
        .into_inner();

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut client = server.client().await;
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let events = (0..=(i % 3))
                    .map(|k| match (writer + i + k) % 4 {
                        0 => event("Wanted", &[], b""),
                        1 => event("Other", &["flag"], b""),
                        2 => event("Other", &[], b""),
                        _ => event("Noise", &["x"], b""),
                    })
                    .collect();
                append(&mut client, append_request(events))
                    .await
                    .expect("append");
            }
        }));
    }
    // A second subscription joins mid-way, after whatever is recorded by then.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let joined_after = client
        .head(v1::HeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .position;
    let mut mid_way = client
        .subscribe(subscribe(joined_after))
        .await
        .unwrap()
        .into_inner();
    for writer in writers {
        writer.await.unwrap();
    }

    let read = v1::ReadRequest {
        query: wanted.clone(),
        ..Default::default()
    };
    let (expected, _) = read_all(&mut client, read).await.unwrap();
    let expected = positions(&expected);
    assert!(!expected.is_empty());
    let received = receive(&mut from_start, expected.len()).await;
    assert_eq!(positions(&received), expected);

    let after = joined_after.unwrap_or(0);
    let expected_mid: Vec<u64> = expected.iter().copied().filter(|p| *p > after).collect();
    let received = receive(&mut mid_way, expected_mid.len()).await;
    assert_eq!(positions(&received), expected_mid);

    // Nothing more arrives: no duplicates were pending.
    append(
        &mut client,
        append_request(vec![event("Wanted", &[], b"last")]),
    )
    .await
    .unwrap();
    let last = client
        .head(v1::HeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    assert_eq!(positions(&receive(&mut from_start, 1).await), vec![last]);
    assert_eq!(positions(&receive(&mut mid_way, 1).await), vec![last]);
}

/// A subscriber that stops reading does not hold up writers or other readers; when it resumes
/// it still receives everything, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_hold_up_writers_or_readers() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut stalled = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lively = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    // About 24 MiB: far more than the transport and the server queue hold for one stream.
    let data = vec![9u8; 64 * 1024];
    let mut writer = server.client().await;
    let mut total = 0;
    for _ in 0..48 {
        let events = (0..8).map(|_| event("E", &[], &data)).collect();
        total = tokio::time::timeout(WAIT, append(&mut writer, append_request(events)))
            .await
            .expect("a writer was held up by a stalled subscriber")
            .unwrap();
        // The lively subscriber keeps up meanwhile.
        let got = receive(&mut lively, 8).await;
        assert_eq!(got.last().map(|e| e.position), Some(total));
    }
    let (events, _) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .unwrap();
    assert_eq!(events.len() as u64, total);
    let received = receive(&mut stalled, total as usize).await;
    assert_eq!(positions(&received), (1..=total).collect::<Vec<_>>());
}
