//! Damaged stores: a record that fails its checksum is refused with DATA_LOSS while the rest is
//! still served, and `umadb check` names it; blocks of the data file overwritten with garbage
//! are reported by `umadb check` (never a crash) and never served as valid data.

mod common;
mod support;

use common::{append, append_request, assert_error, event, item, positions, query, read_all};
use std::path::Path;
use support::*;
use tonic::transport::Channel;
use tonic::Code;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;
use umadb_proto::v1::error_response::ErrorType;

/// Fills a store through a server started with `args`: `count` events of types A/B with tags,
/// the data of event `marked` (1-based) replaced by `marker`.
async fn fill(
    db: &Path,
    args: &[&str],
    count: u64,
    marked: Option<(u64, &[u8])>,
) -> Vec<v1::SequencedEvent> {
    let mut server = Umadb::spawn(db, args);
    let mut client = server.client().await;
    let mut position = 0;
    while position < count {
        let batch: Vec<v1::Event> = (position + 1..=(position + 50).min(count))
            .map(|p| {
                let data = match marked {
                    Some((at, marker)) if at == p => marker.to_vec(),
                    _ => format!("event {p} {}", "x".repeat((p % 200) as usize)).into_bytes(),
                };
                event(
                    if p % 2 == 0 { "A" } else { "B" },
                    &[&format!("t{}", p % 7), "all"],
                    &data,
                )
            })
            .collect();
        position = append(&mut client, append_request(batch))
            .await
            .expect("append");
    }
    let (events, _) = read_all(&mut client, v1::ReadRequest::default())
        .await
        .unwrap();
    // Closed cleanly: the data file is then taken as it is, damage and all. (After a kill,
    // opening would bring it back to the last checkpoint and apply the log's records again,
    // rewriting the damaged record.)
    server.stop();
    events
}

/// Flips a byte in every copy of the record holding `marker` in the data file (copy-on-write
/// leaves stale copies in free pages).
fn damage_record(db: &Path, marker: &[u8]) {
    let path = db.join("data.mdb");
    let mut bytes = std::fs::read(&path).expect("read data file");
    let copies: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(at, _)| at)
        .collect();
    assert!(!copies.is_empty(), "the record is in the file");
    for at in copies {
        bytes[at + 5] ^= 0x20;
    }
    std::fs::write(&path, &bytes).expect("write data file");
}

fn assert_check_names_position_150(db: &Path) {
    let (code, report) = check(db);
    assert_eq!(code, Some(2), "{report}");
    assert!(report.contains("DAMAGED"), "{report}");
    assert!(
        report.contains("position 150") && report.contains("checksum"),
        "{report}"
    );
}

/// Events 1-149, before the damaged one, are served.
async fn assert_served_before_150(client: &mut DcbClient<Channel>) {
    let request = v1::ReadRequest {
        limit: Some(149),
        ..Default::default()
    };
    let (before, _) = read_all(client, request).await.expect("before the damage");
    assert_eq!(positions(&before), (1..150).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_past_the_indexed_head_fails_every_query_reaching_it_and_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let marker = b"this unindexed record will be damaged on disk";
    // 300 events in appends of 50 stay within the default index lag: none is indexed.
    fill(&db, &[], 300, Some((150, marker))).await;
    damage_record(&db, marker);
    assert_check_names_position_150(&db);

    let server = Umadb::spawn(&db, &[]);
    let mut client = server.client().await;
    // Unindexed events are found by reading them, so even a query for other tags reaches the
    // damaged record; it fails rather than answer without knowing what that event holds.
    let status = read_all(
        &mut client,
        v1::ReadRequest {
            query: query(vec![item(&[], &["t4"])]),
            ..Default::default()
        },
    )
    .await
    .expect_err("a query over the unindexed damaged record must fail");
    let message = assert_error(&status, Code::DataLoss, ErrorType::Corruption);
    assert!(message.contains("150"), "{message}");
    // Events before it are served; an append, which would have to index it, is refused.
    assert_served_before_150(&mut client).await;
    let status = append(&mut client, append_request(vec![event("New", &[], b"no")]))
        .await
        .expect_err("an append over an unindexable tail");
    let message = assert_error(&status, Code::DataLoss, ErrorType::Corruption);
    assert!(message.contains("150"), "{message}");
    let head = client.head(v1::HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.position, Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_its_checksum_is_refused_as_data_loss_and_the_rest_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let marker = b"this record will be damaged on disk";
    // Every event indexed: the damaged record is reached only by reads that need it.
    fill(&db, &["--index-lag", "0"], 300, Some((150, marker))).await;
    damage_record(&db, marker);

    assert_check_names_position_150(&db);

    let server = Umadb::spawn(&db, &[]);
    let mut client = server.client().await;
    // A read that reaches the damaged record fails with DATA_LOSS naming it ...
    let status = read_all(&mut client, v1::ReadRequest::default())
        .await
        .expect_err("a read over the damaged record must fail");
    let message = assert_error(&status, Code::DataLoss, ErrorType::Corruption);
    assert!(message.contains("150"), "{message}");
    // ... also backwards and through a subscription ...
    let backwards = v1::ReadRequest {
        backwards: Some(true),
        ..Default::default()
    };
    let status = read_all(&mut client, backwards)
        .await
        .expect_err("backwards");
    assert_error(&status, Code::DataLoss, ErrorType::Corruption);
    let mut subscription = client
        .subscribe(v1::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    let mut received = Vec::new();
    let status = loop {
        match subscription.message().await {
            Ok(Some(m)) => received.extend(m.events),
            Ok(None) => panic!("the subscription ended without reporting the damage"),
            Err(status) => break status,
        }
    };
    assert_error(&status, Code::DataLoss, ErrorType::Corruption);
    // It delivered a gapless prefix before the batch holding the damaged record.
    let delivered = positions(&received);
    assert_eq!(delivered, (1..=delivered.len() as u64).collect::<Vec<_>>());
    assert!(delivered.len() < 150);
    // ... while everything around it is still served.
    assert_served_before_150(&mut client).await;
    let (after, _) = read_all(
        &mut client,
        v1::ReadRequest {
            start: Some(151),
            ..Default::default()
        },
    )
    .await
    .expect("after the damage");
    assert_eq!(positions(&after), (151..=300).collect::<Vec<_>>());
    // Event 150 has type A and tag t3: a query for other tags never touches it.
    let (others, _) = read_all(
        &mut client,
        v1::ReadRequest {
            query: query(vec![item(&[], &["t4"])]),
            ..Default::default()
        },
    )
    .await
    .expect("a query not matching the damaged record");
    assert!(others.iter().all(|e| e.position % 7 == 4));
    assert_eq!(others.len(), 43);
    let head = client.head(v1::HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.position, Some(300));
    let position = append(&mut client, append_request(vec![event("New", &[], b"ok")]))
        .await
        .expect("appends still work");
    assert_eq!(position, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_blocks_in_the_data_file_are_reported_and_never_served_as_valid_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine");
    let original = fill(&pristine, &[], 3000, None).await;
    let file_len = std::fs::metadata(pristine.join("data.mdb")).unwrap().len();
    let page = 4096u64;
    let pages = file_len / page;
    eprintln!("data file: {file_len} bytes, {pages} pages");
    // UMADB_CORRUPTION_SEED explores other damage than the fixed default.
    let seed = std::env::var("UMADB_CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = Rng::new(seed);
    let mut outcomes = Vec::new();
    for trial in 0..48 {
        let db = dir.path().join(format!("damaged-{trial}"));
        std::fs::create_dir(&db).unwrap();
        let mut bytes = std::fs::read(pristine.join("data.mdb")).unwrap();
        // Trial 0 hits both meta pages; the others whole random pages, short runs of garbage
        // anywhere (a torn or misdirected write), or single flipped bits (decaying media).
        let damage = match trial % 3 {
            _ if trial == 0 => vec![(0, 2 * page as usize), (page as usize, page as usize)],
            1 => (0..3)
                .map(|_| ((rng.below(pages) * page) as usize, page as usize))
                .collect(),
            2 => (0..3)
                .map(|_| (rng.below(file_len) as usize, 1 + rng.below(64) as usize))
                .collect(),
            _ => (0..8).map(|_| (rng.below(file_len) as usize, 0)).collect(),
        };
        for &(at, len) in &damage {
            if len == 0 {
                bytes[at] ^= 1 << rng.below(8);
            }
            for b in bytes.iter_mut().skip(at).take(len) {
                *b = rng.next() as u8;
            }
        }
        let blocks: Vec<String> = damage
            .iter()
            .map(|(at, len)| match len {
                0 => format!("bit at {at}"),
                _ => format!("{len} bytes at {at}"),
            })
            .collect();
        std::fs::write(db.join("data.mdb"), &bytes).unwrap();

        let (code, report) = check(&db);
        assert!(
            code == Some(0) || code == Some(2),
            "trial {trial} (blocks {blocks:?}): umadb check must report, not fail: {code:?}\n{report}"
        );
        if code == Some(2) {
            assert!(report.contains("DAMAGED"), "{report}");
        }
        // Whatever the server serves from the damaged copy is exactly the original data.
        let served = match Umadb::try_spawn(&db, &[]) {
            Err(log) => {
                assert!(
                    log.contains("corruption"),
                    "trial {trial}: a server refusing a damaged store says why:\n{log}"
                );
                "refused to open".to_string()
            }
            Ok(mut server) => {
                let mut client = server.client().await;
                let outcome = match read_all(&mut client, v1::ReadRequest::default()).await {
                    Ok((events, _)) => {
                        // Never garbage served as an event, nor a short or reordered log passed
                        // off as the whole: a read that succeeds serves exactly the original.
                        assert!(
                            same_events(&events, &original),
                            "trial {trial}: damaged data served as valid: {}",
                            describe_difference(&events, &original)
                        );
                        format!("served all {} events, intact", events.len())
                    }
                    Err(status) => {
                        format!("read refused: {:?} {}", status.code(), status.message())
                    }
                };
                // The page walk at open refuses damaged page structure that LMDB would follow
                // into a fault: the server never dies on a damaged store.
                assert!(
                    server.is_running(),
                    "trial {trial} (blocks {blocks:?}): the server died on a damaged store:\n{}",
                    server.log()
                );
                outcome
            }
        };
        // With --verify-on-start, a store check reports damaged is refused before it is opened,
        // so the server cannot crash on it; a clean one is served.
        match Umadb::try_spawn(&db, &["--verify-on-start"]) {
            Err(log) => {
                assert_eq!(
                    code,
                    Some(2),
                    "trial {trial}: --verify-on-start refused a store check passes:\n{log}"
                );
                assert!(
                    log.contains("refusing to serve") && log.contains("DAMAGED"),
                    "trial {trial}: the refusal gives the checker's report:\n{log}"
                );
            }
            Ok(server) => {
                assert_eq!(
                    code,
                    Some(0),
                    "trial {trial}: --verify-on-start served a store check reports damaged"
                );
                let mut client = server.client().await;
                let (events, _) = read_all(&mut client, v1::ReadRequest::default())
                    .await
                    .expect("a verified store is served");
                assert!(same_events(&events, &original), "trial {trial}");
            }
        }
        let first_line = report
            .lines()
            .find(|l| l.starts_with("OK") || l.starts_with("DAMAGED"))
            .unwrap_or("")
            .to_string();
        outcomes.push(format!(
            "trial {trial} {blocks:?}: check exit {code:?} ({first_line}); server: {served}"
        ));
    }
    for o in &outcomes {
        eprintln!("{o}");
    }
}

fn same_events(a: &[v1::SequencedEvent], b: &[v1::SequencedEvent]) -> bool {
    a == b
}

/// Where two reads differ, in a few words (the events themselves are too long to print).
fn describe_difference(got: &[v1::SequencedEvent], expected: &[v1::SequencedEvent]) -> String {
    match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => format!(
            "first difference at index {i}: position {} vs {}",
            got[i].position, expected[i].position
        ),
        None => format!("{} events served, {} expected", got.len(), expected.len()),
    }
}
