//! Protobuf encoding of events borrowed from where they are stored ([`SequencedEventRef`]),
//! byte for byte what prost writes for the [`v1::SequencedEvent`] converted from the same
//! event, without building that message: a read's events go from the store's pages to the
//! response's bytes with no copy of their own.
//!
//! [`v1::SequencedEvent`]: crate::v1::SequencedEvent

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use umadb_core::{EventRef, SequencedEventRef, TrackingInfo};

/// The text form of a uuid (`v1::Event::uuid`): hyphenated, lower case.
const UUID_TEXT_LEN: usize = 36;

/// Appends `event` as field `field` (a `repeated SequencedEvent`) of the message being built
/// in `buf`.
pub fn encode_sequenced_event(field: u32, event: &SequencedEventRef<'_>, buf: &mut Vec<u8>) {
    let event_len = event_len(&event.event);
    let tracking_len = event.tracking_info.map(tracking_len);
    let mut len = uint64_len(1, event.position) + message_len(2, event_len);
    if let Some(tracking_len) = tracking_len {
        len += message_len(3, tracking_len);
    }
    buf.reserve(message_len(field, len));
    put_header(field, len, buf);
    put_uint64(1, event.position, buf);
    put_header(2, event_len, buf);
    put_event(&event.event, buf);
    if let (Some(tracking), Some(tracking_len)) = (event.tracking_info, tracking_len) {
        put_header(3, tracking_len, buf);
        put_str(1, &tracking.source, buf);
        put_uint64(2, tracking.position, buf);
    }
}

fn event_len(e: &EventRef<'_>) -> usize {
    let mut len = str_len(1, e.event_type.len());
    len += e
        .tags
        .iter()
        .map(|t| message_len(2, t.len()))
        .sum::<usize>();
    len += str_len(3, e.data.len());
    if e.uuid.is_some() {
        len += message_len(4, UUID_TEXT_LEN);
    }
    len += e
        .metadata
        .iter()
        .map(|&(k, v)| message_len(5, str_len(1, k.len()) + str_len(2, v.len())))
        .sum::<usize>();
    len
}

fn put_event(e: &EventRef<'_>, buf: &mut Vec<u8>) {
    put_str(1, e.event_type, buf);
    for tag in &e.tags {
        // A repeated field writes every element, empty ones too.
        put_header(2, tag.len(), buf);
        buf.extend_from_slice(tag.as_bytes());
    }
    put_bytes(3, e.data, buf);
    if let Some(uuid) = e.uuid {
        let mut text = [0u8; UUID_TEXT_LEN];
        put_str(4, uuid.hyphenated().encode_lower(&mut text), buf);
    }
    for &(key, value) in &e.metadata {
        put_header(5, str_len(1, key.len()) + str_len(2, value.len()), buf);
        put_str(1, key, buf);
        put_str(2, value, buf);
    }
}

fn tracking_len(t: &TrackingInfo) -> usize {
    str_len(1, t.source.len()) + uint64_len(2, t.position)
}

/// The bytes a length-delimited field of `len` bytes takes, key and length included.
fn message_len(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

/// The bytes a scalar string or bytes field of `len` bytes takes: none when empty, as proto3
/// leaves it out.
fn str_len(field: u32, len: usize) -> usize {
    match len {
        0 => 0,
        len => message_len(field, len),
    }
}

fn uint64_len(field: u32, value: u64) -> usize {
    match value {
        0 => 0,
        v => key_len(field) + encoded_len_varint(v),
    }
}

fn put_header(field: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_str(field: u32, s: &str, buf: &mut Vec<u8>) {
    put_bytes(field, s.as_bytes(), buf);
}

fn put_bytes(field: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_header(field, bytes.len(), buf);
        buf.extend_from_slice(bytes);
    }
}

fn put_uint64(field: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(field, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use prost::Message;
    use umadb_core::{Event, SequencedEvent, Uuid};

    fn prost_bytes(events: &[SequencedEvent]) -> Vec<u8> {
        v1::ReadResponse {
            events: events.iter().cloned().map(Into::into).collect(),
            head: None,
        }
        .encode_to_vec()
    }

    fn borrowed_bytes(events: &[SequencedEvent]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in events {
            encode_sequenced_event(1, &e.into(), &mut buf);
        }
        buf
    }

    fn event(
        event_type: &str,
        tags: &[&str],
        data_len: usize,
        uuid: Option<u128>,
        metadata: &[(&str, &str)],
    ) -> Event {
        let mut e = Event::new(event_type, tags.iter().copied(), vec![0xa5; data_len]);
        e.uuid = uuid.map(Uuid::from_u128);
        e.metadata = metadata
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        e
    }

    #[test]
    fn events_are_encoded_exactly_as_prost_encodes_their_converted_messages() {
        let long = "x".repeat(300);
        let events = [
            event("T", &["a"], 100, None, &[]),
            event("", &[], 0, None, &[]),
            event("T", &["", "b", &long], 0, Some(0), &[]),
            event(
                &long,
                &[],
                20_000,
                Some(u128::MAX),
                &[("k", "v"), ("", ""), ("k2", "")],
            ),
            event(
                "Ünïcode",
                &["tag:é"],
                1,
                Some(0x0123_4567_89ab_cdef),
                &[("", &long)],
            ),
        ];
        let trackings = [
            None,
            Some(TrackingInfo {
                source: "upstream".into(),
                position: 1 << 40,
            }),
            Some(TrackingInfo {
                source: String::new(),
                position: 0,
            }),
        ];
        let mut all = Vec::new();
        for (i, e) in events.iter().enumerate() {
            for (j, tracking) in trackings.iter().enumerate() {
                let one = SequencedEvent {
                    position: [1, 127, 128, u64::MAX][(i + j) % 4],
                    event: e.clone(),
                    tracking_info: tracking.clone(),
                };
                assert_eq!(
                    borrowed_bytes(std::slice::from_ref(&one)),
                    prost_bytes(std::slice::from_ref(&one)),
                    "{one:?}"
                );
                all.push(one);
            }
        }
        assert_eq!(borrowed_bytes(&all), prost_bytes(&all));
    }
}
