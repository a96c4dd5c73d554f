//! Interning: event types, tags and tracking sources get small numeric ids so that index keys
//! stay short whatever the length of the string (LMDB keys are limited to 511 bytes).

use super::format::{self, Kind, META_NEXT_ID};
use super::{storage_error, Dbs, WALK_LIMIT};
use crate::error::{Error, Result};
use heed::{RoTxn, RwTxn};
use std::ops::Bound;

pub fn lookup(txn: &RoTxn, dbs: &Dbs, kind: Kind, s: &str) -> Result<Option<u32>> {
    let key = format::intern_key(kind, s);
    let Some(value) = dbs.intern.get(txn, &key).map_err(storage_error)? else {
        return Ok(None);
    };
    if format::is_hashed_intern(s) {
        format::find_in_bucket(value, s)
    } else {
        format::decode_u32(value, "intern id").map(Some)
    }
}

pub fn get_or_create(txn: &mut RwTxn, dbs: &Dbs, kind: Kind, s: &str) -> Result<u32> {
    let key = format::intern_key(kind, s);
    let existing = dbs
        .intern
        .get(txn, &key)
        .map_err(storage_error)?
        .map(<[u8]>::to_vec);
    if let Some(value) = &existing {
        if !format::is_hashed_intern(s) {
            return format::decode_u32(value, "intern id");
        }
        if let Some(id) = format::find_in_bucket(value, s)? {
            return Ok(id);
        }
    }
    let id = next_id(txn, dbs)?;
    let value = if format::is_hashed_intern(s) {
        let mut bucket = existing.unwrap_or_default();
        format::push_to_bucket(&mut bucket, id, s);
        bucket
    } else {
        id.to_be_bytes().to_vec()
    };
    dbs.intern.put(txn, &key, &value).map_err(storage_error)?;
    Ok(id)
}

/// The ids of `names` (sorted by kind and then name, without repeats), created for those not
/// interned yet.
///
/// Names of up to `INLINE_INTERN_LEN` bytes are their own keys, in the same order as the list, so
/// they are found in one forward walk of a cursor that steps from one to the next (seeking
/// instead when the next is more than `WALK_LIMIT` entries away), rather than in a lookup from
/// the B-tree's root each. The names not found are then created in list order, so the ids come
/// out as name by name creation would give them.
pub fn get_or_create_sorted(
    txn: &mut RwTxn,
    dbs: &Dbs,
    names: &[(Kind, &str)],
) -> Result<Vec<u32>> {
    let mut ids: Vec<Option<u32>> = vec![None; names.len()];
    // The first name from `from` on that is its own key.
    let inline_from =
        |from: usize| (from..names.len()).find(|&i| !format::is_hashed_intern(names[i].1));
    let mut next = inline_from(0);
    'seek: while let Some(first) = next {
        let from = format::intern_key(names[first].0, names[first].1);
        let mut walk = dbs
            .intern
            .range(txn, &(Bound::Included(from.as_slice()), Bound::Unbounded))
            .map_err(storage_error)?;
        let mut at = walk.next().transpose().map_err(storage_error)?;
        let walked = names[first].0;
        while let Some(i) = next {
            let (kind, name) = names[i];
            let key = format::intern_key(kind, name);
            let mut steps = 0;
            while let Some((stored, _)) = at {
                if stored >= key.as_slice() {
                    break;
                }
                // Another kind's names lie past all of this kind's: seek at once.
                if steps == WALK_LIMIT || kind != walked {
                    continue 'seek;
                }
                at = walk.next().transpose().map_err(storage_error)?;
                steps += 1;
            }
            if let Some((stored, value)) = at {
                if stored == key.as_slice() {
                    ids[i] = Some(format::decode_u32(value, "intern id")?);
                }
            }
            next = inline_from(i + 1);
        }
    }
    names
        .iter()
        .zip(ids)
        .map(|(&(kind, name), id)| match id {
            Some(id) => Ok(id),
            None => get_or_create(txn, dbs, kind, name),
        })
        .collect()
}

fn next_id(txn: &mut RwTxn, dbs: &Dbs) -> Result<u32> {
    let id = match dbs.meta.get(txn, META_NEXT_ID).map_err(storage_error)? {
        Some(bytes) => format::decode_u32(bytes, "next intern id")?,
        None => 0,
    };
    let next = id
        .checked_add(1)
        .ok_or_else(|| Error::Internal("the store has run out of intern ids".into()))?;
    dbs.meta
        .put(txn, META_NEXT_ID, &next.to_be_bytes())
        .map_err(storage_error)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    //! `get_or_create_sorted` must give every name the id that looking it up alone gives, and
    //! create the missing ones, whether the walk steps, seeks or meets long (hashed) names.
    use super::super::{format::INLINE_INTERN_LEN, Store};
    use super::*;

    #[test]
    fn sorted_walk_agrees_with_single_lookups() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().join("db")).expect("open");
        let shared = &store.shared;
        let dbs = &shared.dbs;
        let long = |n: u32| format!("{n:05}{}", "x".repeat(INLINE_INTERN_LEN));
        // Interned beforehand: every third short tag, every other long one, one type.
        let mut txn = shared.env.write_txn().expect("write txn");
        let mut before = Vec::new();
        for n in (0..600).step_by(3) {
            before.push((Kind::Tag, format!("t{n:04}")));
        }
        for n in (0..10).step_by(2) {
            before.push((Kind::Tag, long(n)));
        }
        before.push((Kind::EventType, "Opened".to_string()));
        let mut known = Vec::new();
        for (kind, name) in &before {
            known.push(get_or_create(&mut txn, dbs, *kind, name).expect("intern"));
        }
        // A list mixing neighbours, gaps wider than the walk's limit, missing names before,
        // between and after stored ones, long names and two kinds.
        let mut wanted: Vec<(Kind, String)> = vec![(Kind::EventType, "Opened".into())];
        wanted.push((Kind::EventType, "Zzz".into()));
        for n in (0..40).chain(100..110).chain(590..640) {
            wanted.push((Kind::Tag, format!("t{n:04}")));
        }
        for n in 0..10 {
            wanted.push((Kind::Tag, long(n)));
        }
        wanted.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
        let names: Vec<(Kind, &str)> = wanted.iter().map(|(k, n)| (*k, n.as_str())).collect();
        let ids = get_or_create_sorted(&mut txn, dbs, &names).expect("sorted intern");
        for ((kind, name), id) in names.iter().zip(&ids) {
            let alone = lookup(&txn, dbs, *kind, name).expect("lookup");
            assert_eq!(alone, Some(*id), "{kind:?} {name}");
            if let Some(i) = before.iter().position(|(k, n)| k == kind && n == name) {
                assert_eq!(*id, known[i], "{kind:?} {name} kept its id");
            }
        }
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len(), "each name has its own id");
    }
}
