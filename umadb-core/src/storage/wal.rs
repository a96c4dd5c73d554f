//! The write-ahead log: one flush per group.
//!
//! LMDB is opened `NO_SYNC`, so a commit only hands its pages to the page cache. What makes a
//! group durable is its record in the log: the writer appends the group's requests as one record
//! to the current log file and flushes that file, and answers the group after the flush. LMDB's
//! file is flushed only at a checkpoint, every [`CHECKPOINT_INTERVAL`] or [`CHECKPOINT_BYTES`] of
//! records (and after any group too large for a record, and at close):
//!
//! 1. LMDB's file is flushed (`force_sync`): the last commit `c`, its pages and its meta page,
//!    are on disk;
//! 2. `c`'s meta page is read back from the file and written, with `c` and the head it holds,
//!    into the header of the other log file under the next epoch number; that header is
//!    flushed, and records go to that file from then on;
//! 3. the writer's pinned read transaction moves to snapshot `c`. While a snapshot is pinned,
//!    LMDB reuses none of its pages, so every page of the newest durable checkpoint stays as it
//!    was until the next one is durable.
//!
//! Between checkpoints the kernel may write any page of the data file back, in any order: a meta
//! page of a commit after `c` can reach the disk before the pages it points to. So opening a
//! store that a process left without closing (`restore` in `pages.rs` and `Store::open_with`)
//! first writes `c`'s meta page from the newest intact header back into both meta slots (as
//! `c` and as `c - 1`), which brings LMDB to the checkpoint, whose pages were pinned, and then
//! applies the records after it in order (`writer::replay_log`). A record is applied only if it
//! carries the header's epoch, its checksum holds and it continues from the head the records
//! before it left; the first that does not end the log (a record torn by the crash was never
//! answered, and nothing was written after it).
//!
//! A clean close writes a last checkpoint marked closed: nothing follows it, and the next
//! opening leaves the data file as it finds it (so a commit made by another program after the
//! close, an older build say, is kept).
//!
//! Files are `log-0` and `log-1`; epoch `e` lives in `log-{e % 2}`. A file's header takes its
//! first [`RECORDS_AT`] bytes:
//!
//! | bytes         | field                                                     |
//! |---------------|-----------------------------------------------------------|
//! | 0..8          | magic `umadbwh1`                                          |
//! | 8..16         | epoch, u64 LE                                             |
//! | 16..24        | LMDB transaction id of the checkpoint, u64 LE             |
//! | 24..32        | the store's head at the checkpoint, u64 LE                |
//! | 32..34        | length of the meta page bytes, u16 LE                     |
//! | 34..36        | 1 if written by a clean close, else 0, u16 LE             |
//! | 36..40        | crc32 of bytes 8..36 and the meta page bytes, u32 LE      |
//! | 40..          | the checkpoint's meta page (page header and LMDB's meta)  |
//!
//! Records follow, back to back, each a [`HEADER_LEN`]-byte header and a body
//! (`format::encode_journal_request`):
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | magic `umadbwr1`                                             |
//! | 8..16  | epoch, u64 LE                                                |
//! | 16..24 | LMDB transaction id of the group's commit, u64 LE            |
//! | 24..32 | the store's head before the group, u64 LE                    |
//! | 32..36 | body length, u32 LE                                          |
//! | 36..40 | crc32 of bytes 8..36 and the body, u32 LE                    |
//!
//! A file is extended with zeros ahead of need and flushed with its new size then, so a
//! record's flush writes data blocks only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) const HEADER_LEN: usize = 40;
/// Where the first record of a file starts.
pub(crate) const RECORDS_AT: u64 = 4096;
const FILE_MAGIC: &[u8; 8] = b"umadbwh1";
const RECORD_MAGIC: &[u8; 8] = b"umadbwr1";
/// Largest meta page copy a header holds.
const MAX_META: usize = 1024;
/// Largest record written; larger groups are committed and made durable by a checkpoint.
pub(crate) const MAX_RECORD: usize = 8 << 20;
/// A log file grows in steps of this size (rounded up to a power of two).
const MIN_FILE_LEN: u64 = 64 << 10;
/// A checkpoint follows the first group answered this long after the last one...
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// ... or once the current file holds this many bytes of records.
pub(crate) const CHECKPOINT_BYTES: u64 = 4 << 20;

/// The newest intact checkpoint of a store's log, and the records written after it.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub txn_id: u64,
    pub head: u64,
    /// The checkpoint's meta page, as LMDB wrote it.
    pub meta: Vec<u8>,
    /// Written by a clean close.
    pub closed: bool,
    pub records: Vec<Record>,
}

/// A record whose checksum holds, of the recovered epoch.
#[derive(Debug)]
pub(crate) struct Record {
    pub txn_id: u64,
    pub head_before: u64,
    pub body: Vec<u8>,
}

pub(crate) fn file_path(dir: &Path, slot: u64) -> PathBuf {
    dir.join(format!("log-{slot}"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(word)
}

fn crc(fields: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fields);
    hasher.update(body);
    hasher.finalize()
}

/// The intact header of a log file.
struct Header {
    epoch: u64,
    txn_id: u64,
    head: u64,
    meta: Vec<u8>,
    closed: bool,
}

fn read_header(file: &File) -> io::Result<Option<Header>> {
    let len = file.metadata()?.len();
    if len < RECORDS_AT {
        return Ok(None);
    }
    let mut header = vec![0u8; 40 + MAX_META];
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != FILE_MAGIC {
        return Ok(None);
    }
    let meta_len = u16_at(&header, 32) as usize;
    if meta_len > MAX_META {
        return Ok(None);
    }
    let meta = &header[40..40 + meta_len];
    if crc(&header[8..36], meta) != u32_at(&header, 36) {
        return Ok(None);
    }
    Ok(Some(Header {
        epoch: u64_at(&header, 8),
        txn_id: u64_at(&header, 16),
        head: u64_at(&header, 24),
        meta: meta.to_vec(),
        closed: u16_at(&header, 34) == 1,
    }))
}

fn open_existing(dir: &Path, slot: u64) -> io::Result<Option<File>> {
    match File::open(file_path(dir, slot)) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The newest epoch with an intact header in `dir`, if any.
pub(crate) fn newest_epoch(dir: &Path) -> io::Result<Option<u64>> {
    let mut newest = None;
    for slot in 0..2 {
        if let Some(file) = open_existing(dir, slot)? {
            if let Some(header) = read_header(&file)? {
                newest = newest.max(Some(header.epoch));
            }
        }
    }
    Ok(newest)
}

/// The newest intact checkpoint in `dir` and the records after it, up to the first record that
/// is torn, of another epoch, or never written.
pub(crate) fn recover(dir: &Path) -> io::Result<Option<Recovery>> {
    let Some(epoch) = newest_epoch(dir)? else {
        return Ok(None);
    };
    let Some(file) = open_existing(dir, epoch % 2)? else {
        return Ok(None);
    };
    let Some(Header {
        txn_id,
        head,
        meta,
        closed,
        ..
    }) = read_header(&file)?
    else {
        return Ok(None);
    };
    let len = file.metadata()?.len();
    let mut records = Vec::new();
    let mut at = RECORDS_AT;
    let mut header = [0u8; HEADER_LEN];
    while at + HEADER_LEN as u64 <= len {
        file.read_exact_at(&mut header, at)?;
        if &header[..8] != RECORD_MAGIC || u64_at(&header, 8) != epoch {
            break;
        }
        let body_len = u32_at(&header, 32) as usize;
        let end = at + (HEADER_LEN + body_len) as u64;
        if body_len > MAX_RECORD || end > len {
            break;
        }
        let mut body = vec![0u8; body_len];
        file.read_exact_at(&mut body, at + HEADER_LEN as u64)?;
        if crc(&header[8..36], &body) != u32_at(&header, 36) {
            break;
        }
        records.push(Record {
            txn_id: u64_at(&header, 16),
            head_before: u64_at(&header, 24),
            body,
        });
        at = end;
    }
    Ok(Some(Recovery {
        txn_id,
        head,
        meta,
        closed,
        records,
    }))
}

/// Opens (creating it, private like the data file) the log file of `slot`; a new file's name is
/// flushed into `dir` before anything in it counts.
fn open_file(dir: &Path, slot: u64) -> io::Result<(File, u64)> {
    let path = file_path(dir, slot);
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    if !existed {
        File::open(dir)?.sync_all()?;
    }
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// The writer's side of the log.
pub(crate) struct Wal {
    dir: PathBuf,
    /// The current epoch's file and its length (zeros past `end`).
    file: Option<(File, u64)>,
    epoch: u64,
    /// Where the next record goes.
    end: u64,
    /// The length of a record written and not yet flushed.
    pending: Option<u64>,
    /// When the current epoch started.
    since: Instant,
}

impl Wal {
    /// A log whose next checkpoint starts the epoch after `last_epoch`. Nothing may be recorded
    /// before that first checkpoint ([`Wal::start_epoch`]).
    pub fn new(dir: &Path, last_epoch: u64) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            file: None,
            epoch: last_epoch,
            end: RECORDS_AT,
            pending: None,
            since: Instant::now(),
        }
    }

    /// An empty record: room for the header, then the body is appended.
    pub fn new_record(buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
    }

    /// Starts the next epoch from a checkpoint: LMDB's commit `txn_id`, flushed, holding `head`,
    /// whose meta page is `meta`; `closed` marks a clean close's. Returns once the new header
    /// is on disk.
    pub fn start_epoch(
        &mut self,
        txn_id: u64,
        head: u64,
        meta: &[u8],
        closed: bool,
    ) -> io::Result<()> {
        if meta.len() > MAX_META {
            return Err(io::Error::other("meta page copy too large"));
        }
        let epoch = self.epoch + 1;
        let (file, len) = open_file(&self.dir, epoch % 2)?;
        let mut header = vec![0u8; RECORDS_AT as usize];
        header[..8].copy_from_slice(FILE_MAGIC);
        header[8..16].copy_from_slice(&epoch.to_le_bytes());
        header[16..24].copy_from_slice(&txn_id.to_le_bytes());
        header[24..32].copy_from_slice(&head.to_le_bytes());
        header[32..34].copy_from_slice(&(meta.len() as u16).to_le_bytes());
        header[34..36].copy_from_slice(&u16::from(closed).to_le_bytes());
        header[40..40 + meta.len()].copy_from_slice(meta);
        let sum = crc(&header[8..36], meta);
        header[36..40].copy_from_slice(&sum.to_le_bytes());
        file.write_all_at(&header, 0)?;
        let mut slot = (file, len.max(RECORDS_AT));
        extend(&mut slot, MIN_FILE_LEN)?;
        slot.0.sync_data()?;
        self.file = Some(slot);
        self.epoch = epoch;
        self.end = RECORDS_AT;
        self.pending = None;
        self.since = Instant::now();
        Ok(())
    }

    /// Seals `record` (built by [`Wal::new_record`] and the body appended) for LMDB transaction
    /// `txn_id` onto `head_before` and writes it after the last flushed record, unflushed.
    /// Another write takes its place until [`Wal::flush`].
    pub fn write(&mut self, record: &mut [u8], txn_id: u64, head_before: u64) -> io::Result<()> {
        let body_len = record.len() - HEADER_LEN;
        if body_len > MAX_RECORD {
            return Err(io::Error::other("log record too large"));
        }
        let Some(slot) = &mut self.file else {
            return Err(io::Error::other("the log has no checkpoint to follow"));
        };
        record[..8].copy_from_slice(RECORD_MAGIC);
        record[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        record[16..24].copy_from_slice(&txn_id.to_le_bytes());
        record[24..32].copy_from_slice(&head_before.to_le_bytes());
        record[32..36].copy_from_slice(&(body_len as u32).to_le_bytes());
        let sum = crc(&record[8..36], &record[HEADER_LEN..]);
        record[36..40].copy_from_slice(&sum.to_le_bytes());
        extend(slot, self.end + record.len() as u64)?;
        slot.0.write_all_at(record, self.end)?;
        self.pending = Some(record.len() as u64);
        Ok(())
    }

    /// Flushes the record [`Wal::write`] wrote: from here on it counts.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(slot) = &self.file else {
            return Err(io::Error::other("the log has no checkpoint to follow"));
        };
        slot.0.sync_data()?;
        if let Some(len) = self.pending.take() {
            self.end += len;
        }
        Ok(())
    }

    /// Makes the record written and not flushed unreadable, for a commit that failed after it
    /// was written.
    pub fn withdraw(&mut self) -> io::Result<()> {
        let (Some(slot), Some(_)) = (&self.file, self.pending.take()) else {
            return Ok(());
        };
        slot.0.write_all_at(&[0; HEADER_LEN], self.end)?;
        slot.0.sync_data()
    }

    /// Whether a checkpoint is due.
    pub fn due(&self) -> bool {
        self.end - RECORDS_AT >= CHECKPOINT_BYTES || self.since.elapsed() >= CHECKPOINT_INTERVAL
    }

    /// Whether anything was recorded since the last checkpoint.
    pub fn has_records(&self) -> bool {
        self.end > RECORDS_AT
    }
}

/// Extends `slot`'s file to at least `needed` bytes with zeros, flushed with the new size now.
fn extend(slot: &mut (File, u64), needed: u64) -> io::Result<()> {
    let (file, len) = slot;
    if needed <= *len {
        return Ok(());
    }
    let target = needed.next_power_of_two().max(MIN_FILE_LEN);
    let zeros = vec![0u8; (target - *len) as usize];
    file.write_all_at(&zeros, *len)?;
    file.sync_all()?;
    *len = target;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut record = Vec::new();
        Wal::new_record(&mut record);
        record.extend_from_slice(body);
        record
    }

    fn heads(dir: &Path) -> Vec<u64> {
        recover(dir)
            .expect("recover")
            .expect("a checkpoint")
            .records
            .iter()
            .map(|r| r.head_before)
            .collect()
    }

    #[test]
    fn records_follow_the_newest_checkpoint_and_end_at_the_first_unflushed_or_stale_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(recover(dir.path()).expect("recover").is_none());
        let mut wal = Wal::new(dir.path(), 0);
        // Nothing is recorded before a checkpoint.
        assert!(wal.write(&mut record(b"x"), 1, 0).is_err());
        wal.start_epoch(5, 10, b"meta five", false)
            .expect("epoch 1");
        for head in [10, 11, 13] {
            wal.write(&mut record(&[head as u8; 3]), head, head)
                .expect("write");
            wal.flush().expect("flush");
        }
        let found = recover(dir.path()).expect("recover").expect("checkpoint");
        assert_eq!(newest_epoch(dir.path()).expect("epoch"), Some(1));
        assert_eq!(
            (found.txn_id, found.head, found.meta.as_slice()),
            (5, 10, b"meta five".as_slice())
        );
        assert_eq!(heads(dir.path()), [10, 11, 13]);
        assert_eq!(found.records[2].body, [13; 3]);
        // A withdrawn record is gone, and the next one takes its place.
        wal.write(&mut record(&[1; 100_000]), 20, 20)
            .expect("write");
        wal.withdraw().expect("withdraw");
        assert_eq!(heads(dir.path()), [10, 11, 13]);
        wal.write(&mut record(b"y"), 21, 21).expect("write");
        wal.flush().expect("flush");
        assert_eq!(heads(dir.path()), [10, 11, 13, 21]);

        // Epoch 2 goes to the other file; epoch 3 back to the first, whose old records (of
        // epoch 1) past the new ones are not taken for records of epoch 3.
        wal.start_epoch(30, 30, b"meta thirty", false)
            .expect("epoch 2");
        assert_eq!(heads(dir.path()), Vec::<u64>::new());
        wal.write(&mut record(b"z"), 31, 30).expect("write");
        wal.flush().expect("flush");
        wal.start_epoch(40, 40, b"meta forty", false)
            .expect("epoch 3");
        wal.write(&mut record(b"w"), 41, 40).expect("write");
        wal.flush().expect("flush");
        let found = recover(dir.path()).expect("recover").expect("checkpoint");
        assert_eq!(newest_epoch(dir.path()).expect("epoch"), Some(3));
        assert_eq!(found.txn_id, 40);
        assert_eq!(heads(dir.path()), [40]);

        // A torn newest header leaves the one before it in charge, with its records.
        let path = file_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).expect("tear");
        let found = recover(dir.path()).expect("recover").expect("checkpoint");
        assert_eq!(newest_epoch(dir.path()).expect("epoch"), Some(2));
        assert_eq!(found.txn_id, 30);
        assert_eq!(heads(dir.path()), [30]);
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::new(dir.path(), 7);
        wal.start_epoch(2, 0, b"m", false).expect("epoch");
        for head in 0..3 {
            wal.write(&mut record(b"body"), head + 3, head)
                .expect("write");
            wal.flush().expect("flush");
        }
        let path = file_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).expect("read");
        // The second record's body.
        bytes[RECORDS_AT as usize + HEADER_LEN + 4 + HEADER_LEN] ^= 0xff;
        std::fs::write(&path, &bytes).expect("tear");
        assert_eq!(heads(dir.path()), [0]);
    }
}
