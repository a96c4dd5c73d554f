//! Interning: event types, tags and tracking sources get small numeric ids so that index keys
//! stay short whatever the length of the string (LMDB keys are limited to 511 bytes).

use super::format::{self, Kind, META_NEXT_ID};
use super::{storage_error, Dbs};
use crate::error::{Error, Result};
use heed::{RoTxn, RwTxn};

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
