//! Byte layouts of everything stored. `umadb-core/DESIGN.md` describes the same layouts in prose.

use crate::error::{Error, Result};
use crate::types::{AppendRequest, Event, EventRef, Position, TrackingInfo};
use uuid::Uuid;

/// Version of the on-disk format, kept in the `meta` database under [`META_FORMAT`]. Version 2
/// added [`META_INDEXED_HEAD`]; version 3 added the gap form of index chunks (`chunk.rs`),
/// beside the roaring form that earlier versions hold, and keeps each key's newest chunk under
/// its open-chunk key ([`open_chunk_key`]). Stores of versions 1 and 2 are upgraded when they
/// are opened.
pub const FORMAT_VERSION: u32 = 3;
pub const FORMAT_MAGIC: &[u8; 8] = b"umadb-v1";
pub const META_FORMAT: &[u8] = b"format";
pub const META_NEXT_ID: &[u8] = b"next_intern_id";
/// The last position the indexes cover, u64; events after it are matched without the indexes.
pub const META_INDEXED_HEAD: &[u8] = b"indexed_head";

/// Highest position a store may reach (far beyond any real log; keeps arithmetic clear of
/// overflow).
pub const MAX_POSITION: Position = 1 << 62;

/// Largest stored size of an index chunk before a new chunk is started. An indexing commit
/// rewrites each touched key's open chunk whole, so this bounds what it rewrites per key: with
/// 1,900 bytes, a store past 5M events whose appends kept touching the same 10,000 tags
/// rewrote about 2,300 pages per indexing commit and appended half as fast as at 1M; with 256
/// it stayed within about 20% of its 1M rate up to 9M events (`umadb-core/DESIGN.md`). Reading a
/// long history takes a chunk load per 256 bytes of positions (about 100 to 250 positions).
pub const MAX_CHUNK_BYTES: usize = 256;

/// Which namespace an interned string belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    EventType = 1,
    Tag = 2,
    Source = 3,
}

impl Kind {
    /// The kind a stored kind byte names.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::EventType),
            2 => Some(Kind::Tag),
            3 => Some(Kind::Source),
            _ => None,
        }
    }
}

/// Record layout version of an event record (first byte of the value).
const RECORD_V1: u8 = 1;
const FLAG_UUID: u8 = 1;
const FLAG_TRACKED: u8 = 2;
/// version byte + crc32
const RECORD_HEADER: usize = 5;

pub fn position_key(position: Position) -> [u8; 8] {
    position.to_be_bytes()
}

pub fn decode_position_key(bytes: &[u8]) -> Result<Position> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("event key has {} bytes, expected 8", bytes.len())))?;
    Ok(Position::from_be_bytes(arr))
}

/// Index key: kind, interned id, and the chunk's base (its first position), big-endian so a
/// key's chunks sort by position. A chunk holds offsets from its base; offset 0 is always set.
pub fn index_key(kind: Kind, id: u32, base: Position) -> [u8; INDEX_KEY_LEN] {
    let mut key = [0u8; INDEX_KEY_LEN];
    key[0] = kind as u8;
    key[1..5].copy_from_slice(&id.to_be_bytes());
    key[5..13].copy_from_slice(&base.to_be_bytes());
    key
}

/// Length of an index key: kind, id, base.
pub const INDEX_KEY_LEN: usize = 13;

/// Set in the kind byte of the key of a type's or tag's open (newest) chunk. Open chunks sort
/// after every full chunk, each key's next to the next key's, so the chunks an indexing commit
/// rewrites lie packed together instead of each after its key's full chunks.
pub const OPEN_CHUNK: u8 = 0x40;

/// Key of the open chunk of (`kind`, `id`): the kind with [`OPEN_CHUNK`] set, the id, and a
/// base of 0 (the value names the base, which changes as chunks fill).
pub fn open_chunk_key(kind: Kind, id: u32) -> [u8; INDEX_KEY_LEN] {
    let mut key = index_key(kind, id, 0);
    key[0] |= OPEN_CHUNK;
    key
}

/// The (kind byte without [`OPEN_CHUNK`], id) of an open chunk's key.
pub fn open_chunk_key_parts(key: &[u8]) -> Option<(u8, u32)> {
    if key.len() == INDEX_KEY_LEN && key[0] & OPEN_CHUNK != 0 && key[5..] == [0; 8] {
        Some((
            key[0] & !OPEN_CHUNK,
            u32::from_be_bytes([key[1], key[2], key[3], key[4]]),
        ))
    } else {
        None
    }
}

/// Length of an open chunk's header: its base and the key's first position.
pub const OPEN_HEADER_LEN: usize = 16;

/// An open chunk as stored: its base, the base of the key's first chunk (the open chunk's own
/// when the key has no full chunks), and the chunk's bytes.
#[derive(Debug, Clone, Copy)]
pub struct OpenChunk<'b> {
    pub base: Position,
    pub first: Position,
    pub bytes: &'b [u8],
}

/// Decodes an open chunk's value: base u64, first u64 (both big-endian), chunk bytes.
pub fn decode_open_chunk(kind: Kind, id: u32, value: &[u8]) -> Result<OpenChunk<'_>> {
    let (Some(base), Some(first)) = (
        value.get(..8).and_then(|b| b.try_into().ok()),
        value.get(8..16).and_then(|b| b.try_into().ok()),
    ) else {
        return Err(corrupt(format!(
            "the open index chunk of {kind:?} #{id} has {} bytes, fewer than its header",
            value.len()
        )));
    };
    let (base, first) = (
        Position::from_be_bytes(base),
        Position::from_be_bytes(first),
    );
    if first > base || base == 0 {
        return Err(corrupt(format!(
            "the open index chunk of {kind:?} #{id} names base {base} and first position {first}"
        )));
    }
    Ok(OpenChunk {
        base,
        first,
        bytes: &value[OPEN_HEADER_LEN..],
    })
}

/// Encodes an open chunk's value into `out` (cleared first).
pub fn encode_open_chunk(base: Position, first: Position, bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&base.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The base of an index key, if the key belongs to (`kind`, `id`).
pub fn index_key_base(key: &[u8], kind: Kind, id: u32) -> Option<Position> {
    if key.len() == INDEX_KEY_LEN && key[0] == kind as u8 && key[1..5] == id.to_be_bytes() {
        let mut base = [0u8; 8];
        base.copy_from_slice(&key[5..13]);
        Some(Position::from_be_bytes(base))
    } else {
        None
    }
}

/// Strings up to this length are their own intern key; longer ones are keyed by a hash.
pub const INLINE_INTERN_LEN: usize = 400;
const HASHED: u8 = 0x80;

/// Intern key of a string. Long strings share a bucket per (hash, length); the bucket's value
/// lists every string in it, so a hash collision costs a comparison, never a wrong id.
pub fn intern_key(kind: Kind, s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    if bytes.len() <= INLINE_INTERN_LEN {
        let mut key = Vec::with_capacity(1 + bytes.len());
        key.push(kind as u8);
        key.extend_from_slice(bytes);
        key
    } else {
        let mut key = Vec::with_capacity(13);
        key.push(kind as u8 | HASHED);
        key.extend_from_slice(&fnv1a64(bytes).to_be_bytes());
        key.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        key
    }
}

pub fn is_hashed_intern(s: &str) -> bool {
    s.len() > INLINE_INTERN_LEN
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Finds `s` in a hashed bucket value: a sequence of (id u32, len u32, bytes).
pub fn find_in_bucket(bucket: &[u8], s: &str) -> Result<Option<u32>> {
    let mut r = Reader::new(bucket, "intern bucket");
    while !r.is_empty() {
        let id = r.u32()?;
        let len = r.u32()? as usize;
        if r.bytes(len)? == s.as_bytes() {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

pub fn push_to_bucket(bucket: &mut Vec<u8>, id: u32, s: &str) {
    bucket.extend_from_slice(&id.to_be_bytes());
    bucket.extend_from_slice(&(s.len() as u32).to_be_bytes());
    bucket.extend_from_slice(s.as_bytes());
}

pub fn decode_u32(bytes: &[u8], what: &str) -> Result<u32> {
    let arr: [u8; 4] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("{what} has {} bytes, expected 4", bytes.len())))?;
    Ok(u32::from_be_bytes(arr))
}

pub fn decode_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("{what} has {} bytes, expected 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Encodes an event record: version, crc32 of the rest, flags, then the fields.
pub fn encode_event(event: &Event, tracked: bool, out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_V1);
    out.extend_from_slice(&[0; 4]);
    let mut flags = 0;
    if event.uuid.is_some() {
        flags |= FLAG_UUID;
    }
    if tracked {
        flags |= FLAG_TRACKED;
    }
    out.push(flags);
    put_bytes(out, event.event_type.as_bytes());
    put_varint(out, event.tags.len() as u64);
    for tag in &event.tags {
        put_bytes(out, tag.as_bytes());
    }
    put_varint(out, event.metadata.len() as u64);
    for (key, value) in &event.metadata {
        put_bytes(out, key.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    if let Some(uuid) = event.uuid {
        out.extend_from_slice(uuid.as_bytes());
    }
    put_bytes(out, &event.data);
    let crc = crc32fast::hash(&out[RECORD_HEADER..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
}

/// The event type and tags of a record, borrowed from it, after the checks [`decode_event`]
/// makes of the bytes they come from (version, checksum, lengths, UTF-8).
pub fn decode_keys(position: Position, bytes: &[u8]) -> Result<(&str, Vec<&str>)> {
    decode_event_ref(position, bytes).map(|d| (d.event.event_type, d.event.tags))
}

/// A decoded record: the event and whether its append carried tracking info.
pub struct Decoded<E> {
    pub event: E,
    pub tracked: bool,
}

pub type DecodedEvent = Decoded<Event>;

pub fn decode_event(position: Position, bytes: &[u8]) -> Result<DecodedEvent> {
    decode_event_ref(position, bytes).map(|d| Decoded {
        event: d.event.to_event(),
        tracked: d.tracked,
    })
}

/// The record's event borrowed from `bytes`, after every check: version, checksum, lengths,
/// UTF-8, no trailing bytes.
pub fn decode_event_ref(position: Position, bytes: &[u8]) -> Result<Decoded<EventRef<'_>>> {
    // Only an error pays for the name.
    let what = || format!("event record at position {position}");
    if bytes.len() < RECORD_HEADER + 1 {
        return Err(corrupt(format!(
            "{} is truncated ({} bytes)",
            what(),
            bytes.len()
        )));
    }
    if bytes[0] != RECORD_V1 {
        return Err(corrupt(format!(
            "{} has unknown record version {}",
            what(),
            bytes[0]
        )));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let actual = crc32fast::hash(&bytes[RECORD_HEADER..]);
    if stored != actual {
        return Err(corrupt(format!(
            "{} fails its checksum (stored {stored:08x}, computed {actual:08x})",
            what()
        )));
    }
    let mut r = Reader::new(&bytes[RECORD_HEADER..], "event record");
    r.position = Some(position);
    let flags = r.u8()?;
    let event_type = r.str()?;
    let tag_count = r.count()?;
    let mut tags = Vec::with_capacity(tag_count.min(1024));
    for _ in 0..tag_count {
        tags.push(r.str()?);
    }
    let meta_count = r.count()?;
    let mut metadata = Vec::with_capacity(meta_count.min(1024));
    for _ in 0..meta_count {
        let key = r.str()?;
        let value = r.str()?;
        metadata.push((key, value));
    }
    let uuid = if flags & FLAG_UUID != 0 {
        let raw: [u8; 16] = r
            .bytes(16)?
            .try_into()
            .map_err(|_| corrupt(format!("{}: bad uuid", what())))?;
        Some(Uuid::from_bytes(raw))
    } else {
        None
    };
    let data_len = r.count()?;
    let data = r.bytes(data_len)?;
    if !r.is_empty() {
        return Err(corrupt(format!("{} has trailing bytes", what())));
    }
    Ok(Decoded {
        event: EventRef {
            event_type,
            tags,
            data,
            uuid,
            metadata,
        },
        tracked: flags & FLAG_TRACKED != 0,
    })
}

/// Tracking info of one append, keyed by the append's last position.
pub fn encode_append_tracking(first: Position, tracking: &TrackingInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + tracking.source.len());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&tracking.position.to_be_bytes());
    out.extend_from_slice(tracking.source.as_bytes());
    out
}

/// Returns (first position of the append, tracking info).
pub fn decode_append_tracking(bytes: &[u8]) -> Result<(Position, TrackingInfo)> {
    if bytes.len() < 16 {
        return Err(corrupt("append tracking record is truncated".into()));
    }
    let first = decode_u64(&bytes[0..8], "append tracking record")?;
    let position = decode_u64(&bytes[8..16], "append tracking record")?;
    let source = String::from_utf8(bytes[16..].to_vec())
        .map_err(|_| corrupt("append tracking source is not UTF-8".into()))?;
    Ok((first, TrackingInfo { source, position }))
}

/// The body of a journal record (`journal.rs`) is the group's written requests in order, each
/// as: its event count (varint); each event's log record (as [`encode_event`] wrote it) with its
/// length (varint) before it; a tracking flag byte (0 or 1), and with 1 the source (varint
/// length, UTF-8) and the position (u64 LE). Conditions are left out: they held when the group
/// was written, and the requests are applied again only onto the same head.
pub fn put_journal_request_start(out: &mut Vec<u8>, events: usize) {
    put_varint(out, events as u64);
}

/// An event's log record, into a journal record's body (see [`put_journal_request_start`]).
pub fn put_journal_event(out: &mut Vec<u8>, record: &[u8]) {
    put_bytes(out, record);
}

/// A request's tracking info, closing it in a journal record's body.
pub fn put_journal_request_end(out: &mut Vec<u8>, tracking: Option<&TrackingInfo>) {
    match tracking {
        None => out.push(0),
        Some(tracking) => {
            out.push(1);
            put_bytes(out, tracking.source.as_bytes());
            out.extend_from_slice(&tracking.position.to_le_bytes());
        }
    }
}

/// A whole journal record's body for `requests`, as the writer builds it request by request.
#[cfg(any(test, feature = "testing"))]
pub fn journal_body(requests: &[AppendRequest]) -> Vec<u8> {
    let (mut body, mut record) = (Vec::new(), Vec::new());
    for request in requests {
        put_journal_request_start(&mut body, request.events.len());
        for event in &request.events {
            encode_event(event, request.tracking_info.is_some(), &mut record);
            put_journal_event(&mut body, &record);
        }
        put_journal_request_end(&mut body, request.tracking_info.as_ref());
    }
    body
}

/// The requests of a journal record's body, without conditions.
pub fn decode_journal_body(body: &[u8]) -> Result<Vec<AppendRequest>> {
    let mut r = Reader::new(body, "journal record");
    let mut requests = Vec::new();
    while !r.is_empty() {
        let count = r.count()?;
        let mut events = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let len = r.count()?;
            let record = r.bytes(len)?;
            let decoded = decode_event(0, record)
                .map_err(|e| corrupt(format!("journal record: {}", e.message())))?;
            events.push(decoded.event);
        }
        let tracking_info = match r.u8()? {
            0 => None,
            1 => {
                let source = r.string()?;
                let position = u64::from_le_bytes(
                    r.bytes(8)?
                        .try_into()
                        .map_err(|_| corrupt("journal record: bad tracking position".into()))?,
                );
                Some(TrackingInfo { source, position })
            }
            flag => {
                return Err(corrupt(format!(
                    "journal record has unknown tracking flag {flag}"
                )))
            }
        };
        requests.push(AppendRequest {
            events,
            condition: None,
            tracking_info,
        });
    }
    Ok(requests)
}

pub fn corrupt(message: String) -> Error {
    Error::Corruption(message)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Bounds-checked reader over stored bytes; every failure is a corruption error naming `what`.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'a str,
    /// The position of the record read, named in errors with `what`.
    position: Option<Position>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'a str) -> Self {
        Reader {
            buf,
            what,
            position: None,
        }
    }

    /// What is read, for an error message.
    fn name(&self) -> String {
        match self.position {
            Some(position) => format!("{} at position {position}", self.what),
            None => self.what.to_string(),
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(corrupt(format!("{} is truncated", self.name())));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        decode_u32(self.bytes(4)?, self.what)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt(format!("{} has an overlong varint", self.name())))
    }

    /// A length or count, which can never exceed the bytes left.
    fn count(&mut self) -> Result<usize> {
        let v = self.varint()?;
        if v > self.buf.len() as u64 {
            return Err(corrupt(format!(
                "{} claims {v} items/bytes with {} bytes left",
                self.name(),
                self.buf.len()
            )));
        }
        Ok(v as usize)
    }

    fn string(&mut self) -> Result<String> {
        self.str().map(str::to_owned)
    }

    fn str(&mut self) -> Result<&'a str> {
        let len = self.count()?;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes)
            .map_err(|_| corrupt(format!("{} holds a string that is not UTF-8", self.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_type: "Type".into(),
            tags: vec!["a".into(), "b".into()],
            data: vec![0, 1, 2, 255],
            uuid: Some(Uuid::from_u128(42)),
            metadata: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn event_record_round_trips() {
        let mut buf = Vec::new();
        encode_event(&sample(), true, &mut buf);
        let decoded = decode_event(1, &buf).expect("decodes");
        assert_eq!(decoded.event, sample());
        assert!(decoded.tracked);
    }

    #[test]
    fn damaged_record_is_reported_as_corruption_not_panic() {
        let mut buf = Vec::new();
        encode_event(&sample(), false, &mut buf);
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x5a;
            assert!(matches!(
                decode_event(7, &damaged),
                Err(Error::Corruption(_))
            ));
        }
        for len in 0..buf.len() {
            assert!(matches!(
                decode_event(7, &buf[..len]),
                Err(Error::Corruption(_))
            ));
        }
        // A body cut short under a checksum that matches it: the reader itself finds the fault,
        // and names the record's position.
        for len in RECORD_HEADER + 1..buf.len() {
            let mut cut = buf[..len].to_vec();
            let crc = crc32fast::hash(&cut[RECORD_HEADER..]).to_le_bytes();
            cut[1..5].copy_from_slice(&crc);
            match decode_event(7, &cut) {
                Err(Error::Corruption(message)) => {
                    assert!(message.contains("event record at position 7"), "{message}")
                }
                other => panic!("a cut body must be corruption, got {:?}", other.err()),
            }
        }
    }

    #[test]
    fn journal_body_round_trips_and_a_cut_body_is_corruption() {
        let requests = vec![
            AppendRequest {
                events: vec![sample(), Event::new("Other", ["t"], Vec::new())],
                condition: None,
                tracking_info: Some(TrackingInfo {
                    source: "projection".into(),
                    position: 1 << 40,
                }),
            },
            AppendRequest {
                events: Vec::new(),
                condition: None,
                tracking_info: Some(TrackingInfo {
                    source: "empty".into(),
                    position: 3,
                }),
            },
            AppendRequest {
                events: vec![sample()],
                condition: None,
                tracking_info: None,
            },
        ];
        let body = journal_body(&requests);
        assert_eq!(decode_journal_body(&body).expect("decodes"), requests);
        assert_eq!(decode_journal_body(&[]).expect("empty"), Vec::new());
        // A cut between requests leaves a shorter valid body; anywhere else it is corruption.
        let boundaries: Vec<usize> = (1..requests.len())
            .map(|k| journal_body(&requests[..k]).len())
            .collect();
        for len in (1..body.len()).filter(|len| !boundaries.contains(len)) {
            assert!(
                matches!(decode_journal_body(&body[..len]), Err(Error::Corruption(_))),
                "a body cut to {len} bytes must be corruption"
            );
        }
    }

    #[test]
    fn long_strings_get_fixed_size_intern_keys() {
        let long = "x".repeat(65_535);
        assert_eq!(intern_key(Kind::Tag, &long).len(), 13);
        assert!(intern_key(Kind::Tag, "short").len() < 13);
        assert_ne!(intern_key(Kind::Tag, "a"), intern_key(Kind::EventType, "a"));
    }
}
