//! The journal of builds before the log (`wal.rs`): read only, to apply a record such a build
//! left after a crash, when a store it wrote is first opened by this one.
//!
//! Those builds opened LMDB with `NO_META_SYNC` and wrote each group's requests as one record
//! into `journal-{t % 2}` (`t`: the group's LMDB transaction id), flushed beside LMDB's commit.
//! At most the newest commit was at risk. On opening, a record for the transaction after
//! LMDB's last one, onto the head the store has, is a commit whose meta page was lost: it is
//! applied again (`writer::replay`). Any other record is stale or torn, and is ignored. Once a
//! store has a log, the journal files are removed.
//!
//! A record is a 32-byte header and a body (`format::journal_body`):
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | magic `umadbjn1`                                             |
//! | 8..16  | LMDB transaction id the record belongs to, u64 LE            |
//! | 16..24 | the store's head before the group, u64 LE                    |
//! | 24..28 | body length, u32 LE                                          |
//! | 28..32 | crc32 of bytes 8..28 and the body, u32 LE                    |

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"umadbjn1";
/// Largest record those builds wrote.
const MAX_RECORD: usize = 8 << 20;

/// What opening a store applied again after a crash: the records of its log after the last
/// checkpoint (`wal.rs`), or the journal record a build before the log left (see
/// `Store::journal_replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalReplay {
    /// Records applied (groups of append requests, each committed once before the crash).
    pub records: usize,
    /// Append requests they held.
    pub requests: usize,
    /// Events they wrote, at positions `head_before + 1 ..= head_before + events`.
    pub events: u64,
    pub head_before: u64,
}

/// A record found in a journal file whose checksum holds: the same fields as a log record.
pub(crate) use super::wal::Record;

pub(crate) fn file_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("journal-{slot}"))
}

/// The intact records of the journal files in `dir`. A missing file, or one whose record is torn
/// or was never written, holds none.
pub(crate) fn read_records(dir: &Path) -> io::Result<Vec<Record>> {
    let mut records = Vec::new();
    for slot in 0..2 {
        let file = match File::open(file_path(dir, slot)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            continue;
        }
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            continue;
        }
        let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
        let body_len = word(24) as usize;
        if body_len > MAX_RECORD || (HEADER_LEN + body_len) as u64 > len {
            continue;
        }
        let mut body = vec![0u8; body_len];
        file.read_exact_at(&mut body, HEADER_LEN as u64)?;
        if checksum(&header, &body) != word(28) {
            continue;
        }
        records.push(Record {
            txn_id: field(8),
            head_before: field(16),
            body,
        });
    }
    Ok(records)
}

fn checksum(header: &[u8; HEADER_LEN], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..28]);
    hasher.update(body);
    hasher.finalize()
}

/// Writes a record as the builds before the log did, for tests of opening their stores.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn write_record(
    dir: &Path,
    txn_id: u64,
    head_before: u64,
    body: &[u8],
) -> io::Result<()> {
    let mut record = vec![0u8; HEADER_LEN];
    record[..8].copy_from_slice(MAGIC);
    record[8..16].copy_from_slice(&txn_id.to_le_bytes());
    record[16..24].copy_from_slice(&head_before.to_le_bytes());
    record[24..28].copy_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(body);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&record[..HEADER_LEN]);
    let crc = checksum(&header, body);
    record[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(file_path(dir, (txn_id % 2) as usize), record)
}
