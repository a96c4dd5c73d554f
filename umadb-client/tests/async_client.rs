//! The async client against a real server on loopback.

mod common;

use std::time::Duration;

use common::{course_event, course_query, unused_addr, Options, TestServer, API_KEY};
use tokio_stream::StreamExt;
use umadb_client::{
    AppendCondition, Client, Error, Event, Query, QueryItem, RetryPolicy, TrackingInfo, Uuid,
};

/// Long enough to show a stream is waiting, short enough to keep the suite fast.
const QUIET: Duration = Duration::from_millis(300);
/// Bounds every wait that would otherwise hang a broken test.
const PATIENCE: Duration = Duration::from_secs(20);

async fn client(server: &TestServer) -> Client {
    Client::connect(server.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn append_returns_the_position_of_the_last_event_written() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    assert_eq!(client.head().await, Ok(None));
    let events = (0..3).map(|n| course_event("c1", n)).collect();
    assert_eq!(client.append(events, None, None).await, Ok(3));
    assert_eq!(
        client.append(vec![course_event("c2", 0)], None, None).await,
        Ok(4)
    );
    assert_eq!(client.head().await, Ok(Some(4)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_is_resolved_and_calls_with_a_message_are_answered() {
    let server = TestServer::start().await;
    // The client dials through its own connector: the name is resolved (to ::1 and 127.0.0.1
    // on most machines; the server listens on the latter), and every call's headers and
    // message are written together.
    let url = format!("http://localhost:{}", server.addr().port());
    let client = Client::connect(url).await.expect("connect by name");
    for n in 0..20 {
        let position = client
            .append(vec![course_event("named", n)], None, None)
            .await
            .expect("append");
        assert_eq!(position, u64::from(n) + 1);
    }
    let (events, head) = client
        .read(Some(course_query("named")), None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("events");
    assert_eq!(events.len(), 20);
    assert_eq!(head, Some(20));
}

#[tokio::test(flavor = "multi_thread")]
async fn events_round_trip_byte_for_byte() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let mut event = Event::new(
        "Paid",
        ["order:1", "customer:7"],
        vec![0, 159, 146, 150, 255],
    )
    .with_uuid(Uuid::new_v4());
    event.metadata = vec![("trace".into(), "abc".into()), ("z".into(), "".into())];
    let tracking = TrackingInfo {
        source: "payments".into(),
        position: 12,
    };
    client
        .append(vec![event.clone()], None, Some(tracking.clone()))
        .await
        .expect("append");
    let (events, head) = client
        .read(None, None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert_eq!(head, Some(1));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].position, 1);
    assert_eq!(events[0].event, event);
    assert_eq!(events[0].tracking_info, Some(tracking));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_returns_matching_events_and_the_head_at_the_start_of_the_read() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    for n in 0..4 {
        client
            .append(
                vec![course_event("c1", n), course_event("c2", n)],
                None,
                None,
            )
            .await
            .expect("append");
    }
    let (events, head) = client
        .read(Some(course_query("c2")), None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![2, 4, 6, 8]
    );
    assert_eq!(head, Some(8));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_backwards_from_a_start_with_a_limit_reports_the_last_position_returned() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let events = (0..10).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).await.expect("append");
    let (events, head) = client
        .read(None, Some(7), true, Some(3))
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![7, 6, 5]
    );
    assert_eq!(head, Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_of_an_empty_store_has_no_events_and_no_head() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let (events, head) = client
        .read(None, None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert!(events.is_empty());
    assert_eq!(head, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_streams_in_batches_of_the_configured_size() {
    let server = TestServer::start().await;
    let client = Client::builder(server.url())
        .batch_size(10)
        .connect()
        .await
        .expect("connect");
    let events = (0..25).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).await.expect("append");
    let mut response = client.read(None, None, false, None).await.expect("read");
    let mut sizes = Vec::new();
    let mut positions = Vec::new();
    while let Some(batch) = response.next_batch().await.expect("batch") {
        sizes.push(batch.len());
        positions.extend(batch.iter().map(|e| e.position));
        assert_eq!(response.head(), Some(25));
    }
    assert!(sizes.iter().all(|&n| n <= 10), "batch sizes {sizes:?}");
    assert!(sizes.len() >= 3, "batch sizes {sizes:?}");
    assert_eq!(positions, (1..=25).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn read_response_is_a_stream_of_events() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let events = (0..5).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).await.expect("append");
    let mut response = client.read(None, Some(2), false, None).await.expect("read");
    let mut positions = Vec::new();
    while let Some(event) = response.next().await {
        positions.push(event.expect("event").position);
    }
    assert_eq!(positions, vec![2, 3, 4, 5]);
    assert_eq!(response.head(), Some(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_append_fails_with_an_integrity_error_when_the_boundary_changed() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let boundary = course_query("c1");
    let (_, head) = client
        .read(Some(boundary.clone()), None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    let condition = AppendCondition {
        fail_if_events_match: boundary,
        after: head,
    };
    client
        .append(vec![course_event("c1", 1)], Some(condition.clone()), None)
        .await
        .expect("first decision wins");
    let second = client
        .append(vec![course_event("c1", 2)], Some(condition), None)
        .await;
    assert!(
        matches!(second, Err(Error::Integrity(ref m)) if !m.is_empty()),
        "{second:?}"
    );
    assert_eq!(client.head().await, Ok(Some(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn repeating_an_idempotent_append_returns_the_same_position_without_writing() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    client
        .append(vec![course_event("other", 0)], None, None)
        .await
        .expect("append");
    let condition = AppendCondition {
        fail_if_events_match: course_query("c1"),
        after: Some(1),
    };
    let events = vec![
        course_event("c1", 1).with_uuid(Uuid::new_v4()),
        course_event("c1", 2).with_uuid(Uuid::new_v4()),
    ];
    let first = client
        .append(events.clone(), Some(condition.clone()), None)
        .await
        .expect("append");
    let again = client
        .append(events, Some(condition), None)
        .await
        .expect("retry");
    assert_eq!((first, again), (3, 3));
    assert_eq!(client.head().await, Ok(Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn tracking_info_is_recorded_and_must_advance() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    assert_eq!(client.get_tracking_info("upstream").await, Ok(None));
    let tracking = TrackingInfo {
        source: "upstream".into(),
        position: 5,
    };
    client
        .append(vec![course_event("c1", 0)], None, Some(tracking.clone()))
        .await
        .expect("append");
    assert_eq!(client.get_tracking_info("upstream").await, Ok(Some(5)));
    assert_eq!(client.get_tracking_info("elsewhere").await, Ok(None));
    let stale = client
        .append(vec![course_event("c1", 1)], None, Some(tracking))
        .await;
    assert!(matches!(stale, Err(Error::Integrity(_))), "{stale:?}");
    assert_eq!(client.head().await, Ok(Some(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_tag_is_an_invalid_argument_and_writes_nothing() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let event = Event::new("T", ["x".repeat(65_536)], vec![]);
    let result = client.append(vec![event], None, None).await;
    assert!(
        matches!(result, Err(Error::InvalidArgument(ref m)) if m.contains("65535")),
        "{result:?}"
    );
    assert_eq!(client.head().await, Ok(None));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_limit_beyond_the_protocol_is_an_invalid_argument() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let result = client.read(None, None, false, Some(u64::MAX)).await;
    assert!(matches!(result, Err(Error::InvalidArgument(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_reports_serving() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    assert_eq!(client.check_health().await, Ok(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_an_address_without_a_server_is_a_transport_error() {
    let addr = unused_addr();
    let result = Client::connect(format!("http://{addr}")).await;
    assert!(
        matches!(result, Err(Error::Transport(ref m)) if m.contains(&addr.to_string())),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_a_stopped_server_fail_with_transport_errors() {
    let mut server = TestServer::start().await;
    let client = Client::builder(server.url())
        .retry_policy(RetryPolicy::none())
        .connect()
        .await
        .expect("connect");
    client.head().await.expect("head");
    server.stop().await;
    assert!(matches!(client.head().await, Err(Error::Transport(_))));
    assert!(matches!(
        client.read(None, None, false, None).await.map(|_| ()),
        Err(Error::Transport(_))
    ));
    assert!(matches!(
        client.append(vec![course_event("c1", 0)], None, None).await,
        Err(Error::Transport(_))
    ));
    assert!(matches!(
        client.check_health().await,
        Err(Error::Transport(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_call_fails_after_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let outcome = tokio::time::timeout(PATIENCE, async {
        let client = Client::builder(format!("http://{addr}"))
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
            .retry_policy(RetryPolicy::none())
            .connect()
            .await?;
        client.head().await
    })
    .await
    .expect("the timeouts end the call");
    assert!(matches!(outcome, Err(Error::Transport(_))), "{outcome:?}");
    silent.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_the_api_key_fail_with_authentication_errors() {
    let server = TestServer::start_with(Options {
        api_key: true,
        ..Default::default()
    })
    .await;
    for key in [None, Some("wrong-key")] {
        let mut builder = Client::builder(server.url());
        if let Some(key) = key {
            builder = builder.api_key(key);
        }
        let client = builder.connect().await.expect("connect");
        assert!(matches!(client.head().await, Err(Error::Authentication(_))));
        assert!(matches!(
            client.append(vec![course_event("c1", 0)], None, None).await,
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            client.read(None, None, false, None).await.map(|_| ()),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            client.subscribe(None, None).await.map(|_| ()),
            Err(Error::Authentication(_))
        ));
        assert!(matches!(
            client.get_tracking_info("s").await,
            Err(Error::Authentication(_))
        ));
    }
    let client = Client::builder(server.url())
        .api_key(API_KEY)
        .connect()
        .await
        .expect("connect");
    assert_eq!(
        client.append(vec![course_event("c1", 0)], None, None).await,
        Ok(1)
    );
    assert_eq!(client.head().await, Ok(Some(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_self_signed_ca_file_and_an_api_key() {
    let server = TestServer::start_with(Options {
        tls: true,
        api_key: true,
    })
    .await;
    let ca_path = server.ca_path.clone().expect("CA");
    assert!(server.url().starts_with("https://"));
    let client = Client::builder(server.url())
        .ca_path(&ca_path)
        .api_key(API_KEY)
        .connect()
        .await
        .expect("connect over TLS");
    assert_eq!(
        client.append(vec![course_event("c1", 0)], None, None).await,
        Ok(1)
    );
    let (events, head) = client
        .read(None, None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert_eq!((events.len(), head), (1, Some(1)));
    assert_eq!(client.check_health().await, Ok(true));

    let without_key = Client::builder(server.url())
        .ca_path(&ca_path)
        .connect()
        .await
        .expect("connect");
    assert!(matches!(
        without_key.head().await,
        Err(Error::Authentication(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_server_is_not_trusted_without_its_ca() {
    let server = TestServer::start_with(Options {
        tls: true,
        ..Default::default()
    })
    .await;
    // The system roots do not include the test CA.
    let result = Client::builder(server.url())
        .retry_policy(RetryPolicy::none())
        .connect()
        .await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    // Plain text to a TLS port fails too.
    let plain = format!("http://{}", server.addr());
    let outcome = match Client::builder(plain)
        .retry_policy(RetryPolicy::none())
        .request_timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        Ok(client) => client.head().await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(matches!(outcome, Err(Error::Transport(_))), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_sees_events_appended_after_it_started() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    client
        .append(
            vec![course_event("c1", 0), course_event("c2", 0)],
            None,
            None,
        )
        .await
        .expect("append");
    let mut subscription = client
        .subscribe(Some(course_query("c1")), None)
        .await
        .expect("subscribe");
    let first = subscription.next().await.expect("event").expect("ok");
    assert_eq!(first.position, 1);
    // Nothing more matches yet: the subscription waits.
    assert!(tokio::time::timeout(QUIET, subscription.next())
        .await
        .is_err());

    let writer = client.clone();
    tokio::spawn(async move {
        for n in 1..=3 {
            writer
                .append(
                    vec![course_event("c2", n), course_event("c1", n)],
                    None,
                    None,
                )
                .await
                .expect("append");
        }
    });
    let mut positions = Vec::new();
    while positions.len() < 3 {
        let event = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .expect("new event arrives")
            .expect("stream open")
            .expect("ok");
        assert_eq!(event.event.tags, vec!["course:c1".to_string()]);
        positions.push(event.position);
    }
    assert_eq!(positions, vec![4, 6, 8]);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_starts_after_the_given_position() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let events = (0..5).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).await.expect("append");
    let mut subscription = client.subscribe(None, Some(3)).await.expect("subscribe");
    let batch = tokio::time::timeout(PATIENCE, subscription.next_batch())
        .await
        .expect("batch arrives")
        .expect("ok")
        .expect("open");
    assert_eq!(
        batch.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![4, 5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_returns_before_anything_matches() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let subscription = tokio::time::timeout(
        PATIENCE,
        client.subscribe(
            Some(Query::from_items([QueryItem::new(
                ["Nothing"],
                Vec::<String>::new(),
            )])),
            None,
        ),
    )
    .await
    .expect("subscribe returns at once");
    assert!(subscription.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_ends_when_the_server_shuts_down_and_can_resume_after_a_restart() {
    let mut server = TestServer::start().await;
    let client = client(&server).await;
    client
        .append(vec![course_event("c1", 0)], None, None)
        .await
        .expect("append");
    let mut subscription = client.subscribe(None, None).await.expect("subscribe");
    let mut last_seen = subscription
        .next()
        .await
        .expect("event")
        .expect("ok")
        .position;
    server.stop().await;
    let end = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("the subscription ends");
    assert!(end.is_none(), "{end:?}");

    server.start_again().await;
    client
        .append(vec![course_event("c1", 1)], None, None)
        .await
        .expect("append after restart");
    let mut resumed = client
        .subscribe(None, Some(last_seen))
        .await
        .expect("resubscribe");
    let event = tokio::time::timeout(PATIENCE, resumed.next())
        .await
        .expect("event arrives")
        .expect("open")
        .expect("ok");
    last_seen = event.position;
    assert_eq!(last_seen, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_keeps_working_after_a_server_restart() {
    let mut server = TestServer::start().await;
    let client = client(&server).await;
    client
        .append(vec![course_event("c1", 0)], None, None)
        .await
        .expect("append");
    assert_eq!(client.head().await, Ok(Some(1)));

    server.restart().await;

    // An append without uuids is not idempotent: it must succeed without any retry that could
    // write it twice.
    assert_eq!(
        client.append(vec![course_event("c1", 1)], None, None).await,
        Ok(2)
    );
    assert_eq!(client.head().await, Ok(Some(2)));
    let (events, head) = client
        .read(None, None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    assert_eq!((events.len(), head), (2, Some(2)));
    assert_eq!(client.get_tracking_info("s").await, Ok(None));
    assert_eq!(client.check_health().await, Ok(true));

    // Idempotent calls made while the server is down are retried until it is back.
    server.stop().await;
    let reader = client.clone();
    let head = tokio::spawn(async move { reader.head().await });
    tokio::time::sleep(QUIET).await;
    server.start_again().await;
    assert_eq!(head.await.expect("task"), Ok(Some(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn append_refused_while_the_server_is_down_is_sent_once_it_is_back() {
    let mut server = TestServer::start().await;
    let client = client(&server).await;
    client
        .append(vec![course_event("c1", 0)], None, None)
        .await
        .expect("append");
    server.stop().await;
    let writer = client.clone();
    let append =
        tokio::spawn(async move { writer.append(vec![course_event("c1", 1)], None, None).await });
    tokio::time::sleep(QUIET).await;
    server.start_again().await;
    assert_eq!(append.await.expect("task"), Ok(2));
    assert_eq!(client.head().await, Ok(Some(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_from_clones_of_one_client_all_succeed() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in 0..10 {
                    positions.push(
                        client
                            .append(vec![course_event(&format!("c{n}"), i)], None, None)
                            .await
                            .expect("append"),
                    );
                }
                positions
            })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.extend(task.await.expect("task"));
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=80).collect::<Vec<_>>());
}
