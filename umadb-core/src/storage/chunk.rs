//! The two stored forms of an index chunk, and appending a position to a stored chunk without
//! decoding it.
//!
//! An index chunk (`format::index_key` names it) holds offsets from its base, offset 0 always
//! among them, in one of two forms, told apart by the first byte:
//!
//! - **Gap form** (first byte [`GAP_FORM`]): the last offset (u32 little-endian), then each
//!   offset after 0 as its distance from the one before, a LEB128 varint. A tag's positions lie
//!   far apart (a tag of the prepopulated store recurs every ~100,000 events), and here each
//!   takes 3 bytes where roaring takes 10 (a container header, an offset and the value), so the
//!   pages an indexing commit rewrites grow a third as fast with a key's history; an event type
//!   every few events takes one byte a position against roaring's two. New chunks start in it.
//! - **Roaring form**: roaring's portable serialization, which starts with its cookie (first
//!   byte `0x3A` or `0x3B`). A chunk whose gap form fills up moves to it when that is smaller (a
//!   type on every event: run containers), and stores of format version 2 hold only it.
//!
//! The writer adds offsets in increasing order, and most keys (tags) get one or a few new
//! positions per commit, so decoding the whole chunk, inserting and encoding it again cost the
//! writer about a fifth of its time. The gap form is extended at its end, and so is the common
//! roaring form of a sparse chunk — no run containers, the new offset going at the end of the
//! last array container or into a new container after it — giving exactly the bytes roaring
//! would write for the new set. Everything else is left to roaring.
//!
//! That roaring form (the "no run container" layout, little-endian): cookie `12346` (u32), the
//! number of containers N (u32), N descriptions (key u16, cardinality − 1 u16), N offsets (u32,
//! from the start of the bytes to each container's data), then each container's data: an
//! array container (cardinality ≤ 4096) is its sorted u16 values.

use roaring::RoaringBitmap;

/// First byte of a chunk in the gap form.
pub(crate) const GAP_FORM: u8 = 1;

/// The gap form's header: the form byte and the last offset.
const GAP_HEADER: usize = 5;

/// A chunk holding offset 0 only, in the gap form: how every new chunk starts.
pub(crate) fn first_offset_only() -> Vec<u8> {
    vec![GAP_FORM, 0, 0, 0, 0]
}

/// Decodes a chunk of either form into a bitmap (the writer's form for moving a chunk to the
/// roaring form). The error says what is wrong with the bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<RoaringBitmap, String> {
    if bytes.first() != Some(&GAP_FORM) {
        return RoaringBitmap::deserialize_from(bytes).map_err(|e| e.to_string());
    }
    let mut offsets = RoaringBitmap::new();
    for_each_gap_offset(bytes, |offset| {
        offsets.try_push(offset).map_err(|e| e.to_string())
    })?;
    Ok(offsets)
}

/// A chunk's offsets as a reader holds them: the gap form's as a sorted list, the roaring
/// form's as its bitmap. A gap-form chunk holds at most a few hundred offsets (a byte or more
/// each), and a list of them is one allocation where a bitmap takes one per 65,536-offset
/// span they reach (a tag's positions lie that far apart: a chunk of 50 took 51); a roaring
/// chunk can hold millions of offsets in a few runs, which only the bitmap keeps small.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Offsets {
    Listed(Vec<u32>),
    Bitmap(RoaringBitmap),
}

impl Offsets {
    pub fn len(&self) -> u64 {
        match self {
            Offsets::Listed(list) => list.len() as u64,
            Offsets::Bitmap(bitmap) => bitmap.len(),
        }
    }

    pub fn min(&self) -> Option<u32> {
        match self {
            Offsets::Listed(list) => list.first().copied(),
            Offsets::Bitmap(bitmap) => bitmap.min(),
        }
    }

    pub fn max(&self) -> Option<u32> {
        match self {
            Offsets::Listed(list) => list.last().copied(),
            Offsets::Bitmap(bitmap) => bitmap.max(),
        }
    }

    pub fn contains(&self, offset: u32) -> bool {
        match self {
            Offsets::Listed(list) => list.binary_search(&offset).is_ok(),
            Offsets::Bitmap(bitmap) => bitmap.contains(offset),
        }
    }

    /// The first offset at or after `offset`.
    pub fn at_or_after(&self, offset: u32) -> Option<u32> {
        match self {
            Offsets::Listed(list) => list.get(list.partition_point(|&o| o < offset)).copied(),
            Offsets::Bitmap(bitmap) => bitmap.range(offset..).next(),
        }
    }

    /// The last offset at or before `offset`.
    pub fn at_or_before(&self, offset: u32) -> Option<u32> {
        match self {
            Offsets::Listed(list) => match list.partition_point(|&o| o <= offset) {
                0 => None,
                after => Some(list[after - 1]),
            },
            Offsets::Bitmap(bitmap) => bitmap.range(..=offset).next_back(),
        }
    }
}

/// Decodes a chunk of either form for reading (see [`Offsets`]); the same checks as
/// [`decode`].
pub(crate) fn decode_offsets(bytes: &[u8]) -> Result<Offsets, String> {
    if bytes.first() != Some(&GAP_FORM) {
        return decode(bytes).map(Offsets::Bitmap);
    }
    // Each offset after 0 takes a byte at least.
    let mut offsets = Vec::with_capacity(bytes.len().saturating_sub(GAP_HEADER) + 1);
    for_each_gap_offset(bytes, |offset| {
        offsets.push(offset);
        Ok(())
    })?;
    Ok(Offsets::Listed(offsets))
}

/// Hands `each` every offset of a gap-form chunk in increasing order, 0 first, checking every
/// varint, that no gap is zero or passes the largest offset, and the header's last offset.
fn for_each_gap_offset(
    bytes: &[u8],
    mut each: impl FnMut(u32) -> Result<(), String>,
) -> Result<(), String> {
    let last = read_u32(bytes, 1).ok_or("the gap form's header is cut short")?;
    each(0)?;
    let mut offset = 0u32;
    let mut at = GAP_HEADER;
    while at < bytes.len() {
        let (gap, len) = read_varint(&bytes[at..])
            .ok_or_else(|| format!("the gap at byte {at} is cut short or too long"))?;
        offset = offset
            .checked_add(gap)
            .filter(|_| gap > 0)
            .ok_or_else(|| format!("the gap at byte {at} is zero or passes the largest offset"))?;
        each(offset)?;
        at += len;
    }
    if offset != last {
        return Err(format!(
            "the gaps end at offset {offset}, the header says {last}"
        ));
    }
    Ok(())
}

/// Appends `offset`, which must be greater than every offset in `bytes`, when the result stays
/// within `max_bytes` (the gap form) or the bytes are shorter than `max_bytes` and have the
/// simple roaring form. Returns `false`, leaving `bytes` as they were, when roaring must do it
/// (including when the bytes are not what they should be: decoding then reports the damage).
pub(crate) fn append(bytes: &mut Vec<u8>, offset: u32, max_bytes: usize) -> bool {
    if bytes.first() == Some(&GAP_FORM) {
        append_gap(bytes, offset, max_bytes)
    } else {
        append_roaring(bytes, offset, max_bytes)
    }
}

fn append_gap(bytes: &mut Vec<u8>, offset: u32, max_bytes: usize) -> bool {
    let Some(last) = read_u32(bytes, 1) else {
        return false;
    };
    let Some(gap) = offset.checked_sub(last).filter(|&g| g > 0) else {
        return false;
    };
    let mut encoded = [0u8; 5];
    let len = write_varint(gap, &mut encoded);
    if bytes.len() + len > max_bytes {
        return false;
    }
    bytes[1..GAP_HEADER].copy_from_slice(&offset.to_le_bytes());
    bytes.extend_from_slice(&encoded[..len]);
    true
}

/// Writes `value` as a LEB128 varint; returns its length.
fn write_varint(mut value: u32, out: &mut [u8; 5]) -> usize {
    let mut len = 0;
    while value >= 0x80 {
        out[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    out[len] = value as u8;
    len + 1
}

/// Reads a LEB128 varint of at most 5 bytes that fits in a u32: (value, length).
fn read_varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// The cookie of the layout without run containers.
const NO_RUN_COOKIE: u32 = 12346;

/// Largest cardinality of an array container; one more makes it a bitmap container.
const ARRAY_LIMIT: u32 = 4096;

fn append_roaring(bytes: &mut Vec<u8>, offset: u32, max_bytes: usize) -> bool {
    if bytes.len() >= max_bytes || read_u32(bytes, 0) != Some(NO_RUN_COOKIE) {
        return false;
    }
    let Some(count) = read_u32(bytes, 4).and_then(|n| usize::try_from(n).ok()) else {
        return false;
    };
    if count == 0 {
        return false;
    }
    let offsets_at = 8 + 4 * count;
    let data_at = offsets_at + 4 * count;
    let last_description = 8 + 4 * (count - 1);
    let (Some(last_key), Some(last_cardinality), Some(last_offset)) = (
        read_u16(bytes, last_description),
        read_u16(bytes, last_description + 2).map(|c| u32::from(c) + 1),
        read_u32(bytes, offsets_at + 4 * (count - 1)),
    ) else {
        return false;
    };
    // The last container must be an array ending exactly where the bytes end.
    if last_cardinality > ARRAY_LIMIT
        || usize::try_from(last_offset)
            .ok()
            .map(|o| o + 2 * last_cardinality as usize)
            != Some(bytes.len())
        || (last_offset as usize) < data_at
    {
        return false;
    }
    let (key, low) = ((offset >> 16) as u16, offset as u16);
    if key == last_key {
        let Some(last_value) = read_u16(bytes, bytes.len() - 2) else {
            return false;
        };
        if last_cardinality == ARRAY_LIMIT || low <= last_value {
            return false;
        }
        let cardinality_minus_one = last_cardinality as u16;
        bytes[last_description + 2..last_description + 4]
            .copy_from_slice(&cardinality_minus_one.to_le_bytes());
        bytes.extend_from_slice(&low.to_le_bytes());
        return true;
    }
    if key < last_key {
        return false;
    }
    // A new container after the last: a description and an offset go into the headers, which
    // moves every container's data 8 bytes further.
    let Ok(new_count) = u32::try_from(count + 1) else {
        return false;
    };
    for i in 0..count {
        let at = offsets_at + 4 * i;
        let Some(moved) = read_u32(bytes, at).and_then(|o| o.checked_add(8)) else {
            return false;
        };
        bytes[at..at + 4].copy_from_slice(&moved.to_le_bytes());
    }
    let Some(new_offset) = u32::try_from(bytes.len() + 8).ok() else {
        return false;
    };
    bytes.splice(data_at..data_at, new_offset.to_le_bytes());
    let mut description = [0u8; 4];
    description[..2].copy_from_slice(&key.to_le_bytes());
    bytes.splice(offsets_at..offsets_at, description);
    bytes[4..8].copy_from_slice(&new_count.to_le_bytes());
    bytes.extend_from_slice(&low.to_le_bytes());
    true
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use roaring::RoaringBitmap;

    fn serialized(bitmap: &RoaringBitmap) -> Vec<u8> {
        let mut bytes = Vec::new();
        bitmap.serialize_into(&mut bytes).expect("serializes");
        bytes
    }

    proptest! {
        /// Whatever path each append takes, the bytes always decode to the set so far; where the
        /// bytes were extended in place they are exactly what roaring writes for that set.
        #[test]
        fn appended_bytes_are_what_roaring_writes(
            steps in prop::collection::vec(prop_oneof![1u32..4, 1u32..70_000, 60_000u32..300_000], 1..300),
        ) {
            let mut expected = RoaringBitmap::new();
            expected.insert(0);
            let mut bytes = serialized(&expected);
            let mut offset = 0u32;
            let mut in_place = 0;
            for step in steps {
                offset += step;
                expected.insert(offset);
                if append(&mut bytes, offset, usize::MAX) {
                    in_place += 1;
                    prop_assert_eq!(&bytes, &serialized(&expected));
                } else {
                    let mut bitmap = RoaringBitmap::deserialize_from(bytes.as_slice()).expect("decodes");
                    bitmap.insert(offset);
                    bytes = serialized(&bitmap);
                }
                prop_assert_eq!(RoaringBitmap::deserialize_from(bytes.as_slice()).expect("decodes"), expected.clone());
            }
            // Only a full array container (4,096 offsets under one key) needs roaring here.
            prop_assert!(in_place > 0);
        }
    }

    /// Builds a gap-form chunk holding 0 and then each offset of `steps` apart, by appending.
    fn gap_chunk(steps: &[u32]) -> (Vec<u8>, RoaringBitmap) {
        let mut bytes = first_offset_only();
        let mut expected = RoaringBitmap::new();
        expected.insert(0);
        let mut offset = 0u32;
        for &step in steps {
            offset += step;
            assert!(append(&mut bytes, offset, usize::MAX), "append {offset}");
            expected.insert(offset);
        }
        (bytes, expected)
    }

    proptest! {
        /// The gap form takes every increasing offset in place and decodes to the set so far.
        #[test]
        fn gap_form_chunks_decode_to_what_was_appended(
            steps in prop::collection::vec(prop_oneof![1u32..128, 128u32..20_000, 1u32..5_000_000], 0..200),
        ) {
            let (bytes, expected) = gap_chunk(&steps);
            prop_assert_eq!(bytes[0], GAP_FORM);
            prop_assert_eq!(decode(&bytes), Ok(expected));
        }

        /// No bytes make decoding panic; bytes in the gap form decode only to increasing
        /// offsets from 0 that end at the header's last offset.
        #[test]
        fn decoding_any_bytes_fails_cleanly_or_gives_a_consistent_set(
            tail in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = vec![GAP_FORM];
            bytes.extend_from_slice(&tail);
            if let Ok(set) = decode(&bytes) {
                prop_assert!(set.contains(0));
                prop_assert_eq!(set.max(), read_u32(&bytes, 1));
            }
            let _ = decode(&tail);
        }

        /// Decoding for reading refuses what `decode` refuses, and the list and the bitmap it
        /// gives answer every question as the bitmap `decode` gives.
        #[test]
        fn offsets_agree_with_the_bitmap(
            steps in prop::collection::vec(prop_oneof![1u32..128, 1u32..5_000_000], 0..60),
            tail in prop::collection::vec(any::<u8>(), 0..24),
            probes in prop::collection::vec(any::<u32>(), 0..20),
        ) {
            let (gap, expected) = gap_chunk(&steps);
            let roaring = serialized(&expected);
            let mut damaged = vec![GAP_FORM];
            damaged.extend_from_slice(&tail);
            for bytes in [gap, roaring, damaged] {
                let (offsets, bitmap) = match (decode_offsets(&bytes), decode(&bytes)) {
                    (Ok(offsets), Ok(bitmap)) => (offsets, bitmap),
                    (Err(a), Err(b)) => { prop_assert_eq!(a, b); continue; }
                    (a, b) => return Err(TestCaseError::fail(format!("{a:?} against {b:?}"))),
                };
                prop_assert_eq!(matches!(offsets, Offsets::Listed(_)), bytes[0] == GAP_FORM);
                prop_assert_eq!(offsets.len(), bitmap.len());
                prop_assert_eq!(offsets.min(), bitmap.min());
                prop_assert_eq!(offsets.max(), bitmap.max());
                let held: Vec<u32> = bitmap.iter().collect();
                let near: Vec<u32> = held.iter().flat_map(|&o| [o.saturating_sub(1), o, o.saturating_add(1)]).collect();
                for &probe in probes.iter().chain(&near) {
                    prop_assert_eq!(offsets.contains(probe), bitmap.contains(probe));
                    prop_assert_eq!(offsets.at_or_after(probe), bitmap.range(probe..).next());
                    prop_assert_eq!(offsets.at_or_before(probe), bitmap.range(..=probe).next_back());
                }
            }
        }
    }

    #[test]
    fn the_gap_form_is_smaller_than_roaring_for_scattered_offsets() {
        // A tag of the prepopulated store: one position every ~100,000 events.
        let (bytes, expected) = gap_chunk(&[100_000; 50]);
        assert_eq!(bytes.len(), 5 + 50 * 3);
        assert!(serialized(&expected).len() > 3 * bytes.len());
    }

    #[test]
    fn damaged_gap_form_chunks_are_refused() {
        let (bytes, _) = gap_chunk(&[1, 300, 70_000]);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut to {len} bytes");
        }
        let mut wrong_last = bytes.clone();
        wrong_last[1] ^= 1;
        assert!(decode(&wrong_last).is_err(), "the header's last offset");
        let zero_gap = [GAP_FORM, 1, 0, 0, 0, 1, 0];
        assert!(decode(&zero_gap).unwrap_err().contains("zero"));
        let past_u32 = [GAP_FORM, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(decode(&past_u32).is_err(), "a gap past u32");
        let overflow = [
            GAP_FORM, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ];
        assert!(decode(&overflow).is_err(), "offsets past u32");
        let endless = [GAP_FORM, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(decode(&endless).is_err(), "a varint of six bytes");
    }

    #[test]
    fn gap_form_appends_stop_at_the_size_limit_and_refuse_old_offsets() {
        let (mut bytes, _) = gap_chunk(&[1, 1]);
        let before = bytes.clone();
        assert!(!append(&mut bytes, 2, usize::MAX), "the last offset again");
        assert!(!append(&mut bytes, 1, usize::MAX), "an earlier offset");
        let len = bytes.len();
        assert!(
            !append(&mut bytes, 200, len + 1),
            "a two-byte gap past the limit"
        );
        assert_eq!(bytes, before);
        assert!(
            append(&mut bytes, 200, len + 2),
            "a two-byte gap at the limit"
        );
        assert_eq!(bytes.len(), len + 2);
    }

    #[test]
    fn what_is_not_the_simple_form_is_left_alone() {
        let mut dense = RoaringBitmap::new();
        dense.insert_range(0..5000);
        dense.optimize();
        let mut run_form = serialized(&dense);
        let before = run_form.clone();
        assert!(!append(&mut run_form, 6000, usize::MAX), "run containers");
        assert_eq!(run_form, before);

        let mut sparse = RoaringBitmap::new();
        sparse.insert(10);
        let mut bytes = serialized(&sparse);
        assert!(
            !append(&mut bytes, 10, usize::MAX),
            "not after the last offset"
        );
        assert!(!append(&mut bytes, 5, usize::MAX), "before the last offset");
        let len = bytes.len();
        assert!(!append(&mut bytes, 11, len), "at the size limit");
        for len in 0..bytes.len() {
            let mut cut = bytes[..len].to_vec();
            assert!(!append(&mut cut, 11, usize::MAX), "cut to {len} bytes");
        }
        let mut garbage = bytes.clone();
        garbage[4] = 0xff;
        assert!(
            !append(&mut garbage, 11, usize::MAX),
            "a container count past the end"
        );
    }
}
