//! The load generator's append and follow workloads against a real server on loopback: they
//! write what they claim to write, their conditions never fail, and each subscriber receives
//! what it follows.

use std::collections::HashMap;
use std::net::SocketAddr;

use umadb_benches::follow::{self, FollowSpec};
use umadb_benches::workload::{self, AppendSpec, Target};
use umadb_proto::v1;
use umadb_server::ServerConfig;

/// A server on a loopback port over a new store in `dir`, and how to reach it.
async fn start(dir: &tempfile::TempDir) -> (umadb_server::RunningServer, Target) {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let server = umadb_server::start(ServerConfig::new(listen, dir.path().join("store")))
        .await
        .expect("server starts");
    let target = Target {
        url: format!("http://{}", server.local_addr()),
        api_key: None,
    };
    (server, target)
}

async fn head(target: &Target) -> u64 {
    let mut client = target.connect().await.expect("connects");
    client
        .head(target.request(v1::HeadRequest {}))
        .await
        .expect("head")
        .into_inner()
        .position
        .unwrap_or(0)
}

async fn events_after(target: &Target, after: u64) -> Vec<v1::SequencedEvent> {
    let mut client = target.connect().await.expect("connects");
    let mut stream = client
        .read(target.request(v1::ReadRequest {
            query: None,
            start: Some(after + 1),
            backwards: None,
            limit: None,
            subscribe: None,
            batch_size: None,
        }))
        .await
        .expect("read")
        .into_inner();
    let mut events = Vec::new();
    while let Some(response) = stream.message().await.expect("read batch") {
        events.extend(response.events);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_workloads_write_the_same_events_with_or_without_a_condition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, target) = start(&dir).await;
    let prepopulated = workload::prepopulate(&target, 1_000, 400, 1_000)
        .await
        .expect("prepopulates");
    assert_eq!(prepopulated.events, 1_000);
    assert_eq!(head(&target).await, 1_000);

    for (conditional, boundary_tag) in [(false, false), (true, false), (false, true), (true, true)]
    {
        let before = head(&target).await;
        let spec = AppendSpec {
            events_per_request: 3,
            conditional,
            boundary_tag,
        };
        let run = workload::append(&target, 4, spec, 1).await;
        let case = format!("conditional {conditional}, boundary tag {boundary_tag}");
        assert_eq!(run.errors, 0, "{case}: no request fails");
        assert!(run.events >= 3, "{case}: some appends were made");
        assert_eq!(run.events % 3, 0, "{case}");
        assert_eq!(head(&target).await - before, run.events, "{case}");

        let written = events_after(&target, before).await;
        assert_eq!(written.len() as u64, run.events, "{case}");
        let mut per_boundary: HashMap<String, usize> = HashMap::new();
        for sequenced in &written {
            let event = sequenced.event.as_ref().expect("an event");
            assert_eq!(event.tags.len(), 1 + usize::from(boundary_tag), "{case}");
            assert!(event.tags[0].starts_with("written-"), "{case}");
            if boundary_tag {
                assert!(event.tags[1].starts_with("bench-"), "{case}");
                *per_boundary.entry(event.tags[1].clone()).or_default() += 1;
            }
        }
        // Each request's tag is its own: exactly the request's three events carry it.
        assert!(per_boundary.values().all(|&n| n == 3), "{case}");
    }
    server.shutdown().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_workload_delivers_every_event_to_each_subscriber_that_follows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, target) = start(&dir).await;
    workload::prepopulate(&target, 100, 100, 100)
        .await
        .expect("prepopulates");

    for (spec, fanout) in [(FollowSpec::Everything, 3), (FollowSpec::OwnTag, 1)] {
        let before = head(&target).await;
        let run = follow::follow(&target, 2, 3, spec, 1).await;
        let subscribers = run.readers.as_deref().expect("the subscribers' figures");
        assert_eq!(run.errors, 0, "{spec:?}: no append fails");
        assert_eq!(
            subscribers.errors, 0,
            "{spec:?}: each received what it follows, in order"
        );
        assert!(run.events > 0, "{spec:?}: some appends were made");
        assert_eq!(head(&target).await - before, run.events, "{spec:?}");
        // Under `OwnTag` each event reaches one subscriber, under `Everything` all three.
        assert_eq!(subscribers.events, run.events * fanout, "{spec:?}");
        assert!(
            subscribers.p50_ms > 0.0,
            "{spec:?}: delivery latencies were taken"
        );

        let written = events_after(&target, before).await;
        for (i, sequenced) in written.iter().enumerate() {
            let event = sequenced.event.as_ref().expect("an event");
            let own: Vec<_> = event
                .tags
                .iter()
                .filter(|t| t.starts_with("follow-"))
                .collect();
            match spec {
                FollowSpec::Everything => assert!(own.is_empty(), "{spec:?}"),
                FollowSpec::OwnTag => assert_eq!(own.len(), 1, "{spec:?}: event {i}"),
            }
        }
    }
    server.shutdown().await.expect("server stops");
}
