//! Appending a position to a stored index chunk without decoding it.
//!
//! An index chunk is a roaring bitmap in its portable serialized form (`format::index_key`
//! names it). The writer adds positions in increasing order, and most keys (tags) get one or a
//! few new positions per commit, so decoding the whole chunk, inserting and encoding it again
//! cost the writer about a fifth of its time. For the common form of a sparse chunk — no run
//! containers, the new offset going at the end of the last array container or into a new
//! container after it — the bytes can be extended in place, giving exactly the bytes roaring
//! would write for the new set. Everything else is left to roaring.
//!
//! The form (the roaring "no run container" layout, little-endian): cookie `12346` (u32), the
//! number of containers N (u32), N descriptions (key u16, cardinality − 1 u16), N offsets (u32,
//! from the start of the bytes to each container's data), then each container's data: an
//! array container (cardinality ≤ 4096) is its sorted u16 values.

/// The cookie of the layout without run containers.
const NO_RUN_COOKIE: u32 = 12346;

/// Largest cardinality of an array container; one more makes it a bitmap container.
const ARRAY_LIMIT: u32 = 4096;

/// Appends `offset`, which must be greater than every offset in `bytes`, when the bytes have
/// the simple form and are shorter than `max_bytes`. Returns `false`, leaving `bytes` as they
/// were, when roaring must do it (including when the bytes are not what they should be: the
/// roaring decoder then reports the damage).
pub(crate) fn append(bytes: &mut Vec<u8>, offset: u32, max_bytes: usize) -> bool {
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
