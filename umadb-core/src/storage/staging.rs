//! Stores staged as older builds left them, for tests of opening them (the `testing` feature,
//! and this crate's own tests). They change store files behind LMDB's back: never use them on a
//! store that matters.

use super::{format, journal, storage_error, wal};
use heed::types::Bytes;
use std::io;
use std::path::Path;

/// Rewrites the format stamp of the closed store at `dir` to `version`, in a commit of LMDB's
/// own (flushed). With nothing indexed yet, the index is the same in every version, so the
/// stamp alone makes such a store one of that version.
pub fn stamp_format_version(dir: &Path, version: u32) -> crate::Result<()> {
    // SAFETY: the caller has the store closed, and nothing else in this process opens it until
    // this environment is closed below.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(8).open(dir) }.map_err(storage_error)?;
    let mut stamp = format::FORMAT_MAGIC.to_vec();
    stamp.extend_from_slice(&version.to_be_bytes());
    let txn = env.write_txn().map_err(storage_error)?;
    env.create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
        let meta = opener.create_database::<Bytes, Bytes>(txn, Some("meta"))?;
        meta.put(txn, format::META_FORMAT, &stamp)?;
        Ok(heed::CommitOrAbort::<_, ()>::Commit(()))
    })
    .map_err(storage_error)?;
    env.prepare_for_closing().wait();
    Ok(())
}

/// Leaves the closed store at `dir` as a build before the log would after a crash that lost its
/// last commit's meta page: no log files, and the journal record of that commit (`requests`,
/// onto the store's head, in the transaction after its last). For tests of opening such stores;
/// it removes the store's log, so never use it on a store that matters.
pub fn stage_crash_of_a_build_before_the_log(
    dir: &Path,
    requests: &[crate::AppendRequest],
) -> crate::Result<()> {
    let (next, head) = {
        // SAFETY: the caller has the store closed, and nothing else in this process opens it
        // until this environment is closed below.
        let env =
            unsafe { heed::EnvOpenOptions::new().max_dbs(8).open(dir) }.map_err(storage_error)?;
        let txn = env.read_txn().map_err(storage_error)?;
        let next = txn.id() as u64 + 1;
        // Only read: the last key comes back as the "aborted" outcome, and nothing is committed.
        let outcome = env
            .open_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
                let Some(events) = opener.open_database::<Bytes, Bytes>(txn, Some("events"))?
                else {
                    return Ok(heed::CommitOrAbort::<(), _>::Abort(None));
                };
                let last = events.last(txn)?.map(|(key, _)| key.to_vec());
                Ok(heed::CommitOrAbort::Abort(Some(last)))
            })
            .map_err(storage_error)?;
        let head = match outcome {
            heed::CommitOrAbort::Abort(Some(Some(key))) => format::decode_position_key(&key)?,
            heed::CommitOrAbort::Abort(Some(None)) => 0,
            _ => return Err(crate::Error::Corruption("no events database".into())),
        };
        env.prepare_for_closing().wait();
        (next, head)
    };
    for slot in 0..2 {
        match std::fs::remove_file(wal::file_path(dir, slot)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::Error::Io(e.to_string())),
        }
    }
    journal::write_record(dir, next, head, &format::journal_body(requests))
        .map_err(|e| crate::Error::Io(e.to_string()))
}
