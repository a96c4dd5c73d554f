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
//! | 32..40        | where the previous epoch's records after the checkpoint   |
//! |               | start in its file, u64 LE (0: none)                       |
//! | 40..42        | length of the meta page bytes, u16 LE                     |
//! | 42..44        | 1 if written by a clean close, else 0, u16 LE             |
//! | 44..48        | crc32 of bytes 8..44 and the meta page bytes, u32 LE      |
//! | 48..          | the checkpoint's meta page (page header and LMDB's meta)  |
//!
//! Records follow, back to back, each a [`HEADER_LEN`]-byte header and a body
//! (`format::journal_body`):
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
/// A checkpoint follows the first group answered this long after the last one, by default
/// (`StoreOptions::checkpoint_interval`)...
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// ... or once the current file holds this many bytes of records.
pub(crate) const CHECKPOINT_BYTES: u64 = 1 << 20;

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

/// A record whose checksum holds, of the recovered epoch (or of a journal file, `journal.rs`).
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

/// A checkpoint, as the header of its epoch's file holds it.
pub(crate) struct Checkpoint {
    pub epoch: u64,
    /// LMDB's commit, flushed.
    pub txn_id: u64,
    /// The store's head at that commit.
    pub head: u64,
    /// Where the records of the epoch before that followed the commit start in their file
    /// (recorded while the checkpoint was being made); 0 for none.
    pub previous_from: u64,
    /// The commit's meta page, as LMDB wrote it.
    pub meta: Vec<u8>,
    /// Written by a clean close.
    pub closed: bool,
}

fn read_header(file: &File) -> io::Result<Option<Checkpoint>> {
    let len = file.metadata()?.len();
    if len < RECORDS_AT {
        return Ok(None);
    }
    let mut header = vec![0u8; 48 + MAX_META];
    file.read_exact_at(&mut header, 0)?;
    if &header[..8] != FILE_MAGIC {
        return Ok(None);
    }
    let meta_len = u16_at(&header, 40) as usize;
    if meta_len > MAX_META {
        return Ok(None);
    }
    let meta = &header[48..48 + meta_len];
    if crc(&header[8..44], meta) != u32_at(&header, 44) {
        return Ok(None);
    }
    Ok(Some(Checkpoint {
        epoch: u64_at(&header, 8),
        txn_id: u64_at(&header, 16),
        head: u64_at(&header, 24),
        meta: meta.to_vec(),
        previous_from: u64_at(&header, 32),
        closed: u16_at(&header, 42) == 1,
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
    let Some(Checkpoint {
        txn_id,
        head,
        meta,
        closed,
        previous_from,
        ..
    }) = read_header(&file)?
    else {
        return Ok(None);
    };
    // Records of the epoch before, written while this checkpoint was being made, come first.
    let mut records = match open_existing(dir, (epoch + 1) % 2)? {
        Some(before) if epoch > 0 && previous_from >= RECORDS_AT => {
            read_records(&before, epoch - 1, previous_from)?
        }
        _ => Vec::new(),
    };
    records.extend(read_records(&file, epoch, RECORDS_AT)?);
    Ok(Some(Recovery {
        txn_id,
        head,
        meta,
        closed,
        records,
    }))
}

/// The records of `epoch` in `file` from offset `at` up to the first that is torn, of another
/// epoch, or never written.
fn read_records(file: &File, epoch: u64, mut at: u64) -> io::Result<Vec<Record>> {
    let len = file.metadata()?.len();
    let mut records = Vec::new();
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
    Ok(records)
}

/// Writes `checkpoint` as the header of its epoch's file and flushes it. Returns the file, to
/// record into.
pub(crate) fn write_header(dir: &Path, checkpoint: &Checkpoint) -> io::Result<EpochFile> {
    let Checkpoint {
        epoch,
        txn_id,
        head,
        ref meta,
        closed,
        ..
    } = *checkpoint;
    if meta.len() > MAX_META {
        return Err(io::Error::other("meta page copy too large"));
    }
    let (file, len) = open_file(dir, epoch % 2)?;
    let mut header = vec![0u8; RECORDS_AT as usize];
    header[..8].copy_from_slice(FILE_MAGIC);
    header[8..16].copy_from_slice(&epoch.to_le_bytes());
    header[16..24].copy_from_slice(&txn_id.to_le_bytes());
    header[24..32].copy_from_slice(&head.to_le_bytes());
    header[32..40].copy_from_slice(&checkpoint.previous_from.to_le_bytes());
    header[40..42].copy_from_slice(&(meta.len() as u16).to_le_bytes());
    header[42..44].copy_from_slice(&u16::from(closed).to_le_bytes());
    header[48..48 + meta.len()].copy_from_slice(meta);
    let sum = crc(&header[8..44], meta);
    header[44..48].copy_from_slice(&sum.to_le_bytes());
    file.write_all_at(&header, 0)?;
    let mut slot = EpochFile {
        epoch,
        file,
        len: len.max(RECORDS_AT),
    };
    slot.extend(MIN_FILE_LEN)?;
    slot.file.sync_data()?;
    Ok(slot)
}

/// A log file whose header for `epoch` is on disk.
pub(crate) struct EpochFile {
    epoch: u64,
    file: File,
    /// Its length: zeros past the records written.
    len: u64,
}

impl EpochFile {
    /// Extends the file to at least `needed` bytes with zeros, flushed with the new size now.
    fn extend(&mut self, needed: u64) -> io::Result<()> {
        if needed <= self.len {
            return Ok(());
        }
        let target = needed.next_power_of_two().max(MIN_FILE_LEN);
        let zeros = vec![0u8; (target - self.len) as usize];
        self.file.write_all_at(&zeros, self.len)?;
        self.file.sync_all()?;
        self.len = target;
        Ok(())
    }
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
    /// The current epoch's file.
    file: Option<EpochFile>,
    /// The newest epoch started, or to start from.
    epoch: u64,
    /// Where the next record goes.
    end: u64,
    /// The length of a record written and not yet flushed.
    pending: Option<u64>,
    /// When the current epoch started.
    since: Instant,
    /// How long an epoch lasts, at most, before a checkpoint is due.
    interval: Duration,
}

impl Wal {
    /// A log whose next checkpoint starts the epoch after `last_epoch`. Nothing may be recorded
    /// before that first checkpoint ([`Wal::switch`]).
    pub fn new(last_epoch: u64, interval: Duration) -> Wal {
        Wal {
            interval,
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

    /// The epoch the next checkpoint starts.
    pub fn next_epoch(&self) -> u64 {
        self.epoch + 1
    }

    /// Where the next record goes in the current epoch's file, for a checkpoint taken now: 0
    /// when there is no such file.
    pub fn end(&self) -> u64 {
        if self.file.is_some() {
            self.end
        } else {
            0
        }
    }

    /// Records go to `file`, whose header (of the epoch after the current one) is on disk.
    pub fn switch(&mut self, file: EpochFile) {
        self.epoch = file.epoch;
        self.file = Some(file);
        self.end = RECORDS_AT;
        self.pending = None;
        self.since = Instant::now();
    }

    /// Starts the next epoch from a checkpoint here and now (see [`write_header`]); the records
    /// of the current epoch from `previous_from` on follow the checkpoint.
    #[cfg(test)]
    pub fn start_epoch(
        &mut self,
        dir: &Path,
        txn_id: u64,
        head: u64,
        meta: &[u8],
        previous_from: u64,
    ) -> io::Result<()> {
        let checkpoint = Checkpoint {
            epoch: self.next_epoch(),
            txn_id,
            head,
            previous_from,
            meta: meta.to_vec(),
            closed: false,
        };
        let file = write_header(dir, &checkpoint)?;
        self.switch(file);
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
        slot.extend(self.end + record.len() as u64)?;
        slot.file.write_all_at(record, self.end)?;
        self.pending = Some(record.len() as u64);
        Ok(())
    }

    /// Flushes the record [`Wal::write`] wrote: from here on it counts.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(slot) = &self.file else {
            return Err(io::Error::other("the log has no checkpoint to follow"));
        };
        slot.file.sync_data()?;
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
        slot.file.write_all_at(&[0; HEADER_LEN], self.end)?;
        slot.file.sync_data()
    }

    /// Whether a checkpoint is due.
    pub fn due(&self) -> bool {
        self.end - RECORDS_AT >= CHECKPOINT_BYTES || self.since.elapsed() >= self.interval
    }

    /// Whether anything was recorded since the last checkpoint.
    pub fn has_records(&self) -> bool {
        self.end > RECORDS_AT
    }
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
        let mut wal = Wal::new(0, CHECKPOINT_INTERVAL);
        // Nothing is recorded before a checkpoint.
        assert!(wal.write(&mut record(b"x"), 1, 0).is_err());
        wal.start_epoch(dir.path(), 5, 10, b"meta five", 0)
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
        wal.start_epoch(dir.path(), 30, 30, b"meta thirty", 0)
            .expect("epoch 2");
        assert_eq!(heads(dir.path()), Vec::<u64>::new());
        wal.write(&mut record(b"z"), 31, 30).expect("write");
        wal.flush().expect("flush");
        wal.start_epoch(dir.path(), 40, 40, b"meta forty", 0)
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
    fn records_written_while_a_checkpoint_was_made_come_before_its_epochs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::new(0, CHECKPOINT_INTERVAL);
        wal.start_epoch(dir.path(), 1, 0, b"m1", 0)
            .expect("epoch 1");
        let mut from = 0;
        for txn in 2..=5 {
            if txn == 4 {
                // The checkpoint of transaction 3 is taken here: 4 and 5 are recorded before
                // its header is on disk, in the epoch before.
                from = wal.end();
            }
            wal.write(&mut record(b"r"), txn, txn * 10).expect("write");
            wal.flush().expect("flush");
        }
        wal.start_epoch(dir.path(), 3, 30, b"m3", from)
            .expect("epoch 2");
        wal.write(&mut record(b"r"), 6, 60).expect("write");
        wal.flush().expect("flush");
        assert_eq!(heads(dir.path()), [40, 50, 60]);
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::new(7, CHECKPOINT_INTERVAL);
        wal.start_epoch(dir.path(), 2, 0, b"m", 0).expect("epoch");
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
