//! Resource bounds of the `umadb` process: 1,000 idle subscriptions and 100 stalled readers keep
//! its memory under a stated bound, and appends keep working meanwhile. (Append throughput
//! under this load is printed, not asserted: see docs/reliability.md for the figures.)

mod common;
mod support;

use common::{append, append_request, event};
use std::time::{Duration, Instant};
use support::*;
use umadb_proto::v1;

/// The bound stated in docs/reliability.md: resident anonymous memory of the server with
/// 1,000 idle subscriptions and 100 stalled readers of a 24 MiB log.
const BOUND_KIB: u64 = 256 * 1024;

async fn append_rate(server: &Umadb, appends: usize) -> f64 {
    let mut client = server.client().await;
    let started = Instant::now();
    for i in 0..appends {
        append(
            &mut client,
            append_request(vec![event("Rate", &[&format!("r{}", i % 10)], b"x")]),
        )
        .await
        .expect("append under load");
    }
    appends as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscriptions_and_stalled_readers_keep_server_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let server = Umadb::spawn(&db, &[]);
    let mut writer = server.client().await;
    // A 24 MiB log of 8 KiB events.
    let data = vec![7u8; 8 * 1024];
    for _ in 0..30 {
        let events = (0..100).map(|_| event("Big", &["big"], &data)).collect();
        append(&mut writer, append_request(events)).await.unwrap();
    }
    let baseline_rate = append_rate(&server, 200).await;
    let baseline = rss_anon_kib(server.pid());

    // 1,000 idle subscriptions on a type nothing has, over 10 connections.
    let mut held = Vec::new();
    for connection in 0..10 {
        let client = server.client().await;
        for _ in 0..100 {
            let stream = client
                .clone()
                .subscribe(v1::SubscribeRequest {
                    query: common::query(vec![common::item(&["Never"], &[])]),
                    after: None,
                    batch_size: None,
                })
                .await
                .unwrap_or_else(|e| panic!("subscription on connection {connection}: {e:?}"))
                .into_inner();
            held.push(Box::new(stream) as Box<dyn Send>);
        }
    }
    // 100 stalled readers of the whole log, over 10 connections, never read.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let client = server.client().await;
        for _ in 0..10 {
            let stream = client
                .clone()
                .read(v1::ReadRequest::default())
                .await
                .expect("read")
                .into_inner();
            stalled.push(stream);
        }
    }
    // One more stalled reader on a connection of its own (a stalled stream holds its
    // connection's flow-control window, so readers sharing it could not resume alone).
    let mut own = server
        .client()
        .await
        .read(v1::ReadRequest::default())
        .await
        .expect("read")
        .into_inner();
    // Let the server fill every buffer it is going to fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_rate = append_rate(&server, 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss_anon_kib(server.pid());
    eprintln!(
        "server RssAnon: {baseline} KiB before, {loaded} KiB with 1,000 idle subscriptions and \
         101 stalled readers (bound {BOUND_KIB} KiB); sequential append rate {baseline_rate:.0}/s \
         before, {loaded_rate:.0}/s with the load"
    );
    assert!(
        loaded < BOUND_KIB,
        "server memory {loaded} KiB exceeds the bound {BOUND_KIB} KiB"
    );
    // A stalled reader still gets every event once it reads.
    let mut count = 0;
    while let Some(message) = tokio::time::timeout(WAIT, own.message())
        .await
        .expect("a stalled reader resumes")
        .expect("read")
    {
        count += message.events.len();
    }
    // 3,000 big events and the 200 appended before this read began.
    assert_eq!(count, 3200);
    drop(held);
    drop(stalled);
}
