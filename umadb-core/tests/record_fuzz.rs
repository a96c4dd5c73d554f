//! Fuzzing the on-disk record decoding through the public API: bytes of a stored event record
//! are mutated in the data file (bit flips, overwrites, zeroing), and reading it back must either
//! fail with `Corruption` or return exactly the original event — never a panic and never
//! different data passed off as valid. Bounded by proptest's case count (`PROPTEST_CASES`).

use proptest::prelude::*;
use umadb_core::{AppendRequest, Error, Event, ReadRequest, Store};

/// What a mutation does to the bytes around the record.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { offset: usize, bit: u8 },
    Overwrite { offset: usize, byte: u8 },
    Zero { offset: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..96, 0u8..8).prop_map(|(offset, bit)| Mutation::FlipBit { offset, bit }),
        (0usize..96, any::<u8>()).prop_map(|(offset, byte)| Mutation::Overwrite { offset, byte }),
        (0usize..96, 1usize..16).prop_map(|(offset, len)| Mutation::Zero { offset, len }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[A-Za-z]{1,12}",
        prop::collection::vec("[a-z0-9:é]{0,10}", 0..4),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::option::of(any::<u128>()),
        prop::collection::btree_map("[a-z]{1,5}", "[ -~]{0,8}", 0..3),
    )
        .prop_map(|(event_type, tags, data, uuid, metadata)| {
            let mut event = Event::new(event_type, tags, data);
            event.uuid = uuid.map(umadb_core::Uuid::from_u128);
            event.metadata = metadata.into_iter().collect();
            event
        })
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn prefixed(s: &[u8]) -> usize {
    varint_len(s.len()) + s.len()
}

/// Bytes of an event record: version, crc32, flags, then the length-prefixed fields.
fn record_len(event: &Event) -> usize {
    6 + prefixed(event.event_type.as_bytes())
        + varint_len(event.tags.len())
        + event
            .tags
            .iter()
            .map(|t| prefixed(t.as_bytes()))
            .sum::<usize>()
        + varint_len(event.metadata.len())
        + event
            .metadata
            .iter()
            .map(|(k, v)| prefixed(k.as_bytes()) + prefixed(v.as_bytes()))
            .sum::<usize>()
        + if event.uuid.is_some() { 16 } else { 0 }
        + prefixed(&event.data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_record_is_refused_as_corruption_or_read_unchanged(
        target in event(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        // A marker at the end of the data locates the record in the file; its length (from the
        // layout in umadb-core/DESIGN.md) gives its start. Mutations stay inside the record:
        // LMDB's own node headers around it carry no checksum (see docs/reliability.md).
        let marker = b"<<record-under-test>>";
        let mut target = target;
        let mut data = target.data.clone();
        data.extend_from_slice(marker);
        target.data = data;
        {
            let store = Store::open(&path).expect("open");
            for request in [
                vec![Event::new("Before", ["x"], b"before".to_vec())],
                vec![target.clone()],
                vec![Event::new("After", ["y"], b"after".to_vec())],
            ] {
                store
                    .append(AppendRequest { events: request, ..Default::default() })
                    .expect("append");
            }
        }
        let file = path.join("data.mdb");
        let mut bytes = std::fs::read(&file).expect("read");
        let found: Vec<usize> = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| *w == marker)
            .map(|(i, _)| i)
            .collect();
        prop_assert!(!found.is_empty());
        let len = record_len(&target);
        for at in found {
            let end = at + marker.len();
            let record = &mut bytes[end - len..end];
            for m in &mutations {
                match *m {
                    Mutation::FlipBit { offset, bit } => record[offset % len] ^= 1 << bit,
                    Mutation::Overwrite { offset, byte } => record[offset % len] = byte,
                    Mutation::Zero { offset, len: n } => {
                        for b in record.iter_mut().skip(offset % len).take(n) {
                            *b = 0;
                        }
                    }
                }
            }
        }
        std::fs::write(&file, &bytes).expect("write");
        let store = match Store::open(&path) {
            Ok(store) => store,
            // Damage that reaches LMDB's own page structure may stop the open: a clear error.
            Err(e) => {
                prop_assert!(matches!(e, Error::Corruption(_) | Error::Io(_)), "{e:?}");
                return Ok(());
            }
        };
        // crc32 detects every single-bit error: one flipped bit is always refused.
        let single_flip = matches!(mutations.as_slice(), [Mutation::FlipBit { .. }]);
        match store.read_all(ReadRequest::default()) {
            Ok((events, _)) => {
                prop_assert!(!single_flip, "a record with one flipped bit was read as valid");
                // Whatever is returned as valid is exactly what was written.
                let written = [
                    Event::new("Before", ["x"], b"before".to_vec()),
                    target.clone(),
                    Event::new("After", ["y"], b"after".to_vec()),
                ];
                for e in &events {
                    let expected = &written[(e.position - 1) as usize];
                    prop_assert_eq!(&e.event, expected, "position {}", e.position);
                }
            }
            Err(e) => prop_assert!(matches!(e, Error::Corruption(_) | Error::Io(_)), "{e:?}"),
        }
        // The checker agrees: it reports damage or finds everything intact.
        let report = store.check(|_| {}).map_err(|e| TestCaseError::fail(format!("{e:?}")));
        if let Ok(report) = report {
            if report.is_ok() {
                let (events, _) = store.read_all(ReadRequest::default()).expect("read");
                prop_assert_eq!(events.len(), 3);
                prop_assert_eq!(&events[1].event, &target);
            }
        }
    }
}
