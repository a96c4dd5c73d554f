//! The blocking client against a real server on loopback. The server runs on its own runtime;
//! the tests call the client from plain threads, as Python code would.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{course_event, course_query, Options, TestServer, API_KEY};
use tokio::runtime::Runtime;
use umadb_client::blocking::Client;
use umadb_client::{AppendCondition, Error, RetryPolicy, TrackingInfo, Uuid};

/// Bounds every wait that would otherwise hang a broken test.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    runtime: Runtime,
    server: TestServer,
}

impl Server {
    fn start() -> Server {
        Server::start_with(Options::default())
    }

    fn start_with(options: Options) -> Server {
        let runtime = Runtime::new().expect("server runtime");
        let server = runtime.block_on(TestServer::start_with(options));
        Server { runtime, server }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn stop(&mut self) {
        self.runtime.block_on(self.server.stop());
    }

    fn start_again(&mut self) {
        self.runtime.block_on(self.server.start_again());
    }
}

fn client(server: &Server) -> Client {
    Client::connect(server.url()).expect("connect")
}

#[test]
fn blocking_client_supports_every_method() {
    let server = Server::start();
    let client = client(&server);
    assert_eq!(client.check_health(), Ok(true));
    assert_eq!(client.head(), Ok(None));
    assert_eq!(client.get_tracking_info("upstream"), Ok(None));

    let boundary = course_query("c1");
    let (events, head) = client
        .read(Some(boundary.clone()), None, false, None)
        .expect("read")
        .collect_with_head()
        .expect("collect");
    assert!(events.is_empty());
    let condition = AppendCondition {
        fail_if_events_match: boundary,
        after: head,
    };
    let tracking = TrackingInfo {
        source: "upstream".into(),
        position: 1,
    };
    let event = course_event("c1", 0).with_uuid(Uuid::new_v4());
    let position = client
        .append(
            vec![event.clone()],
            Some(condition.clone()),
            Some(tracking.clone()),
        )
        .expect("append");
    assert_eq!(position, 1);
    // The same append again is recognised, not written twice.
    assert_eq!(
        client.append(vec![event], Some(condition.clone()), Some(tracking)),
        Ok(1)
    );
    let conflicting = client.append(vec![course_event("c1", 1)], Some(condition), None);
    assert!(
        matches!(conflicting, Err(Error::Integrity(_))),
        "{conflicting:?}"
    );

    assert_eq!(client.head(), Ok(Some(1)));
    assert_eq!(client.get_tracking_info("upstream"), Ok(Some(1)));

    let mut subscription = client.subscribe(None, None).expect("subscribe");
    let first = subscription.next().expect("event").expect("ok");
    assert_eq!(first.position, 1);
    subscription.cancel();
}

#[test]
fn blocking_read_is_an_iterator_that_reports_the_head_when_exhausted() {
    let server = Server::start();
    let client = client(&server);
    let events = (0..7).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).expect("append");
    let mut response = client.read(None, Some(3), false, None).expect("read");
    let positions: Vec<u64> = response
        .by_ref()
        .map(|event| event.expect("event").position)
        .collect();
    assert_eq!(positions, vec![3, 4, 5, 6, 7]);
    assert_eq!(response.head(), Some(7));
    assert!(response.next().is_none());
}

#[test]
fn large_read_arrives_in_bounded_batches() {
    let server = Server::start();
    let client = Client::builder(server.url())
        .batch_size(100)
        .connect_blocking()
        .expect("connect");
    for chunk in 0..5 {
        let events = (0..1_000)
            .map(|n| course_event("c1", chunk * 1_000 + n))
            .collect();
        client.append(events, None, None).expect("append");
    }
    let mut response = client.read(None, None, false, None).expect("read");
    let mut count = 0;
    let mut expected = 1;
    while let Some(batch) = response.next_batch().expect("batch") {
        assert!(batch.len() <= 100, "batch of {}", batch.len());
        for event in batch {
            assert_eq!(event.position, expected);
            expected += 1;
            count += 1;
        }
    }
    assert_eq!(count, 5_000);
    assert_eq!(response.head(), Some(5_000));
}

#[test]
fn blocking_subscription_sees_events_appended_by_another_thread() {
    let server = Server::start();
    let client = Arc::new(client(&server));
    let mut subscription = client
        .subscribe(Some(course_query("c1")), None)
        .expect("subscribe");
    let writer = Arc::clone(&client);
    let appender = thread::spawn(move || {
        for n in 0..5 {
            writer
                .append(
                    vec![course_event("c2", n), course_event("c1", n)],
                    None,
                    None,
                )
                .expect("append");
        }
    });
    let positions: Vec<u64> = subscription
        .by_ref()
        .take(5)
        .map(|event| event.expect("event").position)
        .collect();
    assert_eq!(positions, vec![2, 4, 6, 8, 10]);
    appender.join().expect("appender");
}

#[test]
fn blocking_subscription_is_cancelled_from_another_thread() {
    let server = Server::start();
    let client = client(&server);
    client
        .append(vec![course_event("c1", 0)], None, None)
        .expect("append");
    let mut subscription = client.subscribe(None, None).expect("subscribe");
    let handle = subscription.cancel_handle();
    let (started, started_rx) = mpsc::channel();
    let (done, done_rx) = mpsc::channel();
    let consumer = thread::spawn(move || {
        let first = subscription.next();
        started.send(()).expect("signal");
        // Blocks: no more events will come until cancelled.
        let after_cancel = subscription.next();
        let then = subscription.next();
        done.send((first, after_cancel, then)).expect("report");
    });
    started_rx.recv_timeout(PATIENCE).expect("first event");
    thread::sleep(Duration::from_millis(200));
    assert!(
        done_rx.try_recv().is_err(),
        "the subscription should wait for events"
    );
    handle.cancel();
    let (first, after_cancel, then) = done_rx.recv_timeout(PATIENCE).expect("cancel wakes it");
    assert_eq!(first.expect("event").expect("ok").position, 1);
    assert!(
        matches!(after_cancel, Some(Err(Error::Cancelled(_)))),
        "{after_cancel:?}"
    );
    assert!(then.is_none());
    consumer.join().expect("consumer");
    // The client is unaffected.
    assert_eq!(client.head(), Ok(Some(1)));
}

#[test]
fn blocking_read_is_cancelled_part_way() {
    let server = Server::start();
    let client = Client::builder(server.url())
        .batch_size(10)
        .connect_blocking()
        .expect("connect");
    let events = (0..100).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).expect("append");
    let mut response = client.read(None, None, false, None).expect("read");
    let batch = response.next_batch().expect("batch").expect("events");
    assert_eq!(batch.len(), 10);
    response.cancel();
    assert!(matches!(response.next_batch(), Err(Error::Cancelled(_))));
    assert_eq!(response.next_batch(), Ok(None));
    assert!(response.next().is_none());
}

#[test]
fn one_client_is_shared_by_many_threads() {
    let server = Server::start();
    let client = Arc::new(client(&server));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = Arc::clone(&client);
            thread::spawn(move || {
                (0..20)
                    .map(|n| {
                        client
                            .append(vec![course_event(&format!("t{t}"), n)], None, None)
                            .expect("append")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut positions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=80).collect::<Vec<_>>());
    let (events, head) = client
        .read(Some(course_query("t2")), None, false, None)
        .expect("read")
        .collect_with_head()
        .expect("collect");
    assert_eq!((events.len(), head), (20, Some(80)));
}

#[test]
fn read_outlives_the_client_that_started_it() {
    let server = Server::start();
    let client = client(&server);
    let events = (0..3).map(|n| course_event("c1", n)).collect();
    client.append(events, None, None).expect("append");
    let response = client.read(None, None, false, None).expect("read");
    drop(client);
    let (events, head) = response.collect_with_head().expect("collect");
    assert_eq!((events.len(), head), (3, Some(3)));
}

#[test]
fn blocking_client_keeps_working_after_a_server_restart() {
    let mut server = Server::start();
    let client = client(&server);
    client
        .append(vec![course_event("c1", 0)], None, None)
        .expect("append");
    server.stop();
    server.start_again();
    assert_eq!(
        client.append(vec![course_event("c1", 1)], None, None),
        Ok(2)
    );
    let (events, head) = client
        .read(None, None, false, None)
        .expect("read")
        .collect_with_head()
        .expect("collect");
    assert_eq!((events.len(), head), (2, Some(2)));
    assert_eq!(client.head(), Ok(Some(2)));
    assert_eq!(client.check_health(), Ok(true));
}

#[test]
fn blocking_subscription_ends_when_the_server_shuts_down() {
    let mut server = Server::start();
    let client = client(&server);
    let mut subscription = client.subscribe(None, None).expect("subscribe");
    let (done, done_rx) = mpsc::channel();
    let consumer = thread::spawn(move || {
        done.send(subscription.next()).expect("report");
    });
    thread::sleep(Duration::from_millis(200));
    server.stop();
    let end = done_rx
        .recv_timeout(PATIENCE)
        .expect("the subscription ends");
    assert!(end.is_none(), "{end:?}");
    consumer.join().expect("consumer");
}

#[test]
fn blocking_errors_have_the_same_kinds() {
    let mut server = Server::start_with(Options {
        tls: true,
        api_key: true,
    });
    let ca_path = server.server.ca_path.clone().expect("CA");
    let anonymous = Client::builder(server.url())
        .ca_path(&ca_path)
        .retry_policy(RetryPolicy::none())
        .connect_blocking()
        .expect("connect");
    assert!(matches!(anonymous.head(), Err(Error::Authentication(_))));
    assert!(matches!(
        anonymous.subscribe(None, None).map(|_| ()),
        Err(Error::Authentication(_))
    ));

    let client = Client::builder(server.url())
        .ca_path(&ca_path)
        .api_key(API_KEY)
        .retry_policy(RetryPolicy::none())
        .connect_blocking()
        .expect("connect");
    assert_eq!(
        client.append(vec![course_event("c1", 0)], None, None),
        Ok(1)
    );
    let invalid = client.append(
        vec![umadb_client::Event::new("x".repeat(70_000), ["t"], vec![])],
        None,
        None,
    );
    assert!(
        matches!(invalid, Err(Error::InvalidArgument(_))),
        "{invalid:?}"
    );
    server.stop();
    assert!(matches!(client.head(), Err(Error::Transport(_))));
}

#[test]
fn blocking_client_and_its_iterators_can_be_dropped_inside_async_code() {
    let server = Server::start();
    let client = client(&server);
    let read = client.read(None, None, false, None).expect("read");
    let subscription = client.subscribe(None, None).expect("subscribe");
    server.runtime.block_on(async move {
        drop(read);
        drop(subscription);
        drop(client);
    });
}
