//! The journal: each group's writes, flushed beside LMDB's commit instead of after it.
//!
//! A durable LMDB commit makes four device operations one after another: write the data pages,
//! flush, write the meta page, flush again. The store opens LMDB with `NO_META_SYNC`, so a
//! commit writes the meta page without the second flush; that meta page reaches the disk with
//! the next commit's first flush. Until then, a power cut could undo the last commit. The
//! journal covers that commit: before LMDB commits a group, the writer writes the group's
//! requests as one record into a journal file, and a second thread flushes it while LMDB writes
//! and flushes its pages. The group is answered once both flushes are done.
//!
//! At most one commit is ever at risk (the newest: each commit's flush carries the meta page of
//! the one before), so two journal files suffice, used in turn by LMDB transaction id: the
//! record of transaction `t` goes to `journal-{t % 2}`, over the record of `t - 2`, which the
//! commit of `t - 1` has made needless. On opening, a record written for the transaction after
//! LMDB's last one, onto the head the store has, is a commit whose meta page was lost: it is
//! applied again (`writer::replay`). Any other record is stale, or torn by the crash (and then
//! was never answered), and is ignored.
//!
//! A record is a 32-byte header and a body (`format::encode_journal_request`):
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | magic `umadbjn1`                                             |
//! | 8..16  | LMDB transaction id the record belongs to, u64 LE            |
//! | 16..24 | the store's head before the group, u64 LE                    |
//! | 24..28 | body length, u32 LE                                          |
//! | 28..32 | crc32 of bytes 8..28 and the body, u32 LE                    |
//!
//! Each file is extended with zeros ahead of need, so a record's flush writes data blocks only,
//! not the file's size. A group whose record would be larger than [`MAX_RECORD`] is not
//! journaled: its commit is flushed in full instead, as LMDB would without `NO_META_SYNC`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

pub(crate) const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"umadbjn1";
/// Largest record written; larger groups are committed with both of LMDB's flushes.
pub(crate) const MAX_RECORD: usize = 8 << 20;
/// A journal file grows in steps of this size (rounded up to a power of two).
const MIN_FILE_LEN: u64 = 64 << 10;

/// What opening a store applied again from its journal: the last commit before a crash, whose
/// meta page had not reached the disk (see `Store::journal_replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalReplay {
    /// LMDB transaction id of the commit.
    pub txn_id: u64,
    /// Append requests it held.
    pub requests: usize,
    /// Events it wrote, at positions `head_before + 1 ..= head_before + events`.
    pub events: u64,
    pub head_before: u64,
}

/// A record found in a journal file whose checksum holds.
#[derive(Debug)]
pub(crate) struct Record {
    pub txn_id: u64,
    pub head_before: u64,
    pub body: Vec<u8>,
}

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

struct Slot {
    file: Arc<File>,
    len: u64,
}

/// The writer's side of the journal: it writes records and hands their flushes to a thread.
pub(crate) struct Journal {
    dir: PathBuf,
    slots: [Option<Slot>; 2],
    flushes: Option<mpsc::SyncSender<Arc<File>>>,
    flushed: mpsc::Receiver<io::Result<()>>,
    flusher: Option<JoinHandle<()>>,
    /// Whether a flush was started and not yet waited for.
    in_flight: bool,
}

impl Journal {
    /// Starts the flushing thread. Files are created at their first record, so a store that is
    /// never appended to has none.
    pub fn start(dir: &Path) -> io::Result<Journal> {
        let (flushes, requests) = mpsc::sync_channel::<Arc<File>>(1);
        let (done, flushed) = mpsc::sync_channel(1);
        let flusher = std::thread::Builder::new()
            .name("umadb-journal".into())
            .spawn(move || {
                while let Ok(file) = requests.recv() {
                    if done.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            slots: [None, None],
            flushes: Some(flushes),
            flushed,
            flusher: Some(flusher),
            in_flight: false,
        })
    }

    /// An empty record: room for the header, then the body is appended.
    pub fn new_record(buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(HEADER_LEN, 0);
    }

    /// Seals `record` (built by [`Journal::new_record`] and the body appended) for transaction
    /// `txn_id` onto `head_before`, writes it to its file and starts flushing it. Call
    /// [`Journal::wait`] before writing the next.
    pub fn write(&mut self, record: &mut [u8], txn_id: u64, head_before: u64) -> io::Result<()> {
        // A flush not waited for (a group that panicked): its result must not be taken for
        // this record's, and says nothing about it.
        let _ = self.wait();
        let body_len = record.len() - HEADER_LEN;
        if body_len > MAX_RECORD {
            return Err(io::Error::other("journal record too large"));
        }
        record[..8].copy_from_slice(MAGIC);
        record[8..16].copy_from_slice(&txn_id.to_le_bytes());
        record[16..24].copy_from_slice(&head_before.to_le_bytes());
        record[24..28].copy_from_slice(&(body_len as u32).to_le_bytes());
        let (header, body) = record.split_at(HEADER_LEN);
        let header: &[u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| io::Error::other("journal header"))?;
        let crc = checksum(header, body);
        record[28..32].copy_from_slice(&crc.to_le_bytes());
        let slot = self.slot((txn_id % 2) as usize, record.len() as u64)?;
        slot.file.write_all_at(record, 0)?;
        let file = slot.file.clone();
        self.flushes
            .as_ref()
            .ok_or_else(|| io::Error::other("the journal is closed"))?
            .send(file)
            .map_err(|_| io::Error::other("the journal's flushing thread stopped"))?;
        self.in_flight = true;
        Ok(())
    }

    /// Waits for the flush [`Journal::write`] started.
    pub fn wait(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.in_flight) {
            return Ok(());
        }
        self.flushed
            .recv()
            .map_err(|_| io::Error::other("the journal's flushing thread stopped"))?
    }

    /// Makes the record written for `txn_id` unreadable, for a commit that failed after it was
    /// written (with its flush waited for).
    pub fn withdraw(&mut self, txn_id: u64) -> io::Result<()> {
        let slot = self.slot((txn_id % 2) as usize, HEADER_LEN as u64)?;
        slot.file.write_all_at(&[0; HEADER_LEN], 0)?;
        slot.file.sync_data()
    }

    /// The open file of `slot`, at least `needed` bytes long.
    fn slot(&mut self, slot: usize, needed: u64) -> io::Result<&Slot> {
        let entry = &mut self.slots[slot];
        if entry.is_none() {
            // Readable by the owner only, as LMDB creates `data.mdb`: it holds events too.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(file_path(&self.dir, slot))?;
            let len = file.metadata()?.len();
            *entry = Some(Slot {
                file: Arc::new(file),
                len,
            });
            // The new file's directory entry must be on disk before a record in it counts.
            File::open(&self.dir)?.sync_all()?;
        }
        let Some(slot) = entry else {
            return Err(io::Error::other("journal file missing"));
        };
        if needed > slot.len {
            // Zeros ahead of need, flushed with the new size now, so later records' flushes
            // write only their own blocks.
            let len = needed.next_power_of_two().max(MIN_FILE_LEN);
            let zeros = vec![0u8; (len - slot.len) as usize];
            slot.file.write_all_at(&zeros, slot.len)?;
            slot.file.sync_all()?;
            slot.len = len;
        }
        Ok(slot)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.wait();
        self.flushes.take();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut record = Vec::new();
        Journal::new_record(&mut record);
        record.extend_from_slice(body);
        record
    }

    fn txn_ids(dir: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = read_records(dir)
            .expect("read")
            .iter()
            .map(|r| r.txn_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn records_alternate_between_two_files_and_a_withdrawn_one_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = Journal::start(dir.path()).expect("start");
        assert!(txn_ids(dir.path()).is_empty());
        journal
            .write(&mut record(b"seven"), 7, 70)
            .expect("write 7");
        journal.wait().expect("flush 7");
        journal
            .write(&mut record(b"eight"), 8, 80)
            .expect("write 8");
        journal.wait().expect("flush 8");
        assert_eq!(txn_ids(dir.path()), vec![7, 8]);
        // Transaction 9 replaces 7, two back, in the same file.
        journal
            .write(&mut record(&[9; 100_000]), 9, 90)
            .expect("write 9");
        journal.wait().expect("flush 9");
        assert_eq!(txn_ids(dir.path()), vec![8, 9]);
        let nine = read_records(dir.path())
            .expect("read")
            .into_iter()
            .find(|r| r.txn_id == 9)
            .expect("record 9");
        assert_eq!((nine.head_before, nine.body.len()), (90, 100_000));
        // A commit that failed after its record was written takes the record back.
        journal.withdraw(9).expect("withdraw");
        assert_eq!(txn_ids(dir.path()), vec![8]);
        // A shorter record over a longer one: the old bytes past it do not matter.
        journal
            .write(&mut record(b"eleven"), 11, 110)
            .expect("write 11");
        journal.wait().expect("flush 11");
        assert_eq!(txn_ids(dir.path()), vec![8, 11]);
    }
}
