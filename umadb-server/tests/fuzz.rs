//! Bounded fuzzing of the service layer: random bytes and mutations of valid request encodings
//! (bit flips, truncations, insertions, splices) are fed to every DCB method over gRPC. Every
//! call gets an answer (never a dropped connection or a crashed server), and afterwards the
//! store passes `umadb check`. Deterministic per seed: `UMADB_FUZZ_SEED` and `UMADB_FUZZ_CASES`
//! repeat or lengthen a run.

mod common;
mod support;

use common::*;
use prost::Message;
use support::{assert_check_clean, Rng};
use tonic::Code;
use umadb_proto::v1;

/// Sends raw bytes as the request message of a DCB method: Ok when the server took them as a
/// valid request and answered, the status when it refused them.
async fn send_raw(
    channel: tonic::transport::Channel,
    method: &str,
    bytes: Vec<u8>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = format!("/umadb.v1.DCB/{method}").parse().expect("path");
    if method == "Read" || method == "Subscribe" {
        let mut stream = grpc
            .server_streaming(tonic::Request::new(bytes), path, common::RawCodec)
            .await?
            .into_inner();
        // Take the first message (a subscription may then wait forever: stop there).
        stream.message().await.map(drop)
    } else {
        grpc.unary(tonic::Request::new(bytes), path, common::RawCodec)
            .await
            .map(drop)
    }
}

/// Valid encodings to mutate, one or more per method.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut tracked = conditional(
        vec![event("T", &["a", "b"], b"data"), event("U", &[], b"")],
        query(vec![item(&["T"], &["a"]), item(&[], &["b"])]),
        Some(3),
    );
    tracked.events[0].uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8".into();
    tracked.events[0].metadata.push(v1::MetadataEntry {
        key: "k".into(),
        value: "v".into(),
    });
    tracked.tracking_info = Some(v1::TrackingInfo {
        source: "src".into(),
        position: 7,
    });
    vec![
        ("Append", tracked.encode_to_vec()),
        (
            "Append",
            append_request(vec![event("E", &["x"], b"")]).encode_to_vec(),
        ),
        (
            "Read",
            v1::ReadRequest {
                query: query(vec![item(&["T"], &["a"])]),
                start: Some(2),
                backwards: Some(true),
                limit: Some(5),
                subscribe: None,
                batch_size: Some(3),
            }
            .encode_to_vec(),
        ),
        (
            "Subscribe",
            v1::SubscribeRequest {
                query: query(vec![item(&["T"], &[])]),
                after: Some(1),
                batch_size: Some(2),
            }
            .encode_to_vec(),
        ),
        ("Head", v1::HeadRequest {}.encode_to_vec()),
        (
            "GetTrackingInfo",
            v1::TrackingRequest {
                source: "src".into(),
            }
            .encode_to_vec(),
        ),
    ]
}

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>, seeds: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] = rng.next() as u8;
            }
            2 => {
                let cut = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.truncate(cut);
            }
            3 => {
                let i = rng.below(bytes.len() as u64 + 1) as usize;
                let n = 1 + rng.below(8) as usize;
                let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(i..i, insert);
            }
            4 => {
                // Splice in part of another valid message.
                let (_, other) = &seeds[rng.below(seeds.len() as u64) as usize];
                let from = rng.below(other.len() as u64 + 1) as usize;
                let i = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.splice(i..i, other[from..].iter().copied());
            }
            5 => {
                // A huge varint length or value.
                let i = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.splice(
                    i..i,
                    [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                );
            }
            _ => {
                bytes = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            }
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_never_break_the_server_or_the_store() {
    let seed = std::env::var("UMADB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let cases: u64 = std::env::var("UMADB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    eprintln!("fuzz seed {seed}, {cases} cases");
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let (method, valid) = &seeds[rng.below(seeds.len() as u64) as usize];
        // Mostly a mutation of a valid request for the same method; sometimes one meant for
        // another method.
        let method = if rng.below(10) == 0 {
            seeds[rng.below(seeds.len() as u64) as usize].0
        } else {
            method
        };
        let bytes = mutate(&mut rng, valid.clone(), &seeds);
        let call = send_raw(channel.clone(), method, bytes.clone());
        match tokio::time::timeout(std::time::Duration::from_secs(2), call).await {
            // A subscription that decoded and now waits for events: accepted.
            Err(_) if method == "Subscribe" || method == "Read" => accepted += 1,
            Err(_) => panic!("case {case}: {method} with {bytes:?} got no answer"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(status)) => {
                refused += 1;
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::FailedPrecondition
                    ),
                    "case {case}: {method} with {bytes:?}: unexpected {status:?}"
                );
                // Every refusal carries an ErrorResponse with a message.
                let details = error_details(&status, status.code());
                assert!(!details.message.is_empty(), "case {case}");
            }
        }
    }
    eprintln!("{accepted} accepted, {refused} refused with a clear error");
    // Still serving, and the store is consistent.
    let mut client = server.client().await;
    let head = client
        .head(v1::HeadRequest {})
        .await
        .expect("head")
        .into_inner();
    eprintln!("head after fuzzing: {:?}", head.position);
    assert_check_clean(&server.dir.path().join("db"));
    assert!(
        accepted > 0 && refused > 0,
        "the mutations exercised both paths"
    );
}
