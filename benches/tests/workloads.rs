//! The load generator's append workloads against a real server on loopback: they write what
//! they claim to write, and their conditions never fail.

use std::collections::HashMap;
use std::net::SocketAddr;

use umadb_benches::workload::{self, AppendSpec, Target};
use umadb_proto::v1;
use umadb_server::ServerConfig;

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
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let server = umadb_server::start(ServerConfig::new(listen, dir.path().join("store")))
        .await
        .expect("server starts");
    let target = Target {
        url: format!("http://{}", server.local_addr()),
        api_key: None,
    };
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
