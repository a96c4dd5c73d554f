//! The writer thread and group commit.
//!
//! The writer takes every queued append request, applies each in order inside one write
//! transaction (a request that fails its checks is rejected alone, before it writes anything),
//! commits once, writes the group's requests as one record to the log and flushes it — one flush
//! for the whole group — and only then answers every caller and publishes the new head. LMDB's
//! own file is flushed only at checkpoints (see `wal.rs`).
//!
//! The indexes may trail the log by up to `index_lag` events (see `StoreOptions::index_lag`):
//! the writer keeps the type and tag ids of the events past the indexed head in memory
//! (`recent`, shared with readers) and indexes them all in the commit that would leave more
//! behind. Until then, queries match those events on those ids (`eval::for_each_match`).

use super::format::{self, Kind, INDEX_KEY_LEN, MAX_CHUNK_BYTES, MAX_POSITION};
use super::journal::{self, JournalReplay};
use super::read::{matching_positions, stored_uuid};
use super::recent::{EventKeys, Recent};
use super::wal::{self, Wal};
use super::{
    chunk, eval, indexed_head, intern, pages, storage_error, tracking_position, Dbs, Job, Shared,
    WALK_LIMIT,
};
use crate::error::{Error, Result};
use crate::types::{AppendCondition, AppendRequest, Event, Position};
use heed::types::Bytes;
use heed::{Env, PutFlags, RoTxn, RwRevRange, RwTxn, WithoutTls};
use roaring::RoaringBitmap;
use std::fs::File;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use uuid::Uuid;

/// The events past the indexed head of a store as opened.
pub(crate) struct Tail {
    /// The last position the indexes cover.
    indexed_head: Position,
    /// The keys of every event after `indexed_head`, in order.
    events: Vec<EventKeys>,
}

impl Tail {
    /// Reads the events past the indexed head of a store whose last position is `head`.
    pub(crate) fn load(txn: &RoTxn, dbs: &Dbs, head: Position) -> Result<Tail> {
        let indexed = indexed_head(txn, dbs)?;
        if indexed > head {
            return Err(format::corrupt(format!(
                "the store is damaged: its indexed head {indexed} lies beyond its last event \
                 {head}"
            )));
        }
        let mut events = Vec::new();
        eval::scan(txn, dbs, indexed + 1, head, false, |position, record| {
            let (event_type, tags) = format::decode_keys(position, record)?;
            let id = |kind: Kind, name: &str| {
                intern::lookup(txn, dbs, kind, name)?.ok_or_else(|| {
                    format::corrupt(format!(
                        "event at position {position}: its {kind:?} {name:?} has no intern entry"
                    ))
                })
            };
            let tag_ids = tags
                .into_iter()
                .map(|tag| id(Kind::Tag, tag))
                .collect::<Result<_>>()?;
            events.push(EventKeys::new(id(Kind::EventType, event_type)?, tag_ids));
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map(drop)?;
        Ok(Tail {
            indexed_head: indexed,
            events,
        })
    }
}

/// A committed group's events as the writer hands them on.
struct Committed {
    head: Position,
    /// Whether the commit indexed every event up to `head`.
    indexed: bool,
    /// The keys of the group's events, in order.
    events: Vec<EventKeys>,
    /// Whether the commit is known to be on disk; when not, it was still committed (and is
    /// readable), so the head moves on, but its requests are answered with the error.
    durable: Result<()>,
}

/// Entries of an indexing commit the writer's buffer keeps room for after it, at most (the
/// default index lag's worth, a few types and tags each).
const KEPT_INDEX_KEYS: usize = 1 << 16;

/// The writer's log (`wal.rs`), its checkpoints and the snapshots they pin.
///
/// A checkpoint is taken between two groups: the writer pins the last commit's snapshot and
/// copies its meta page; the checkpoint thread flushes LMDB's file and writes the next epoch's
/// header, while the writer goes on recording groups in the current epoch. Once the header is
/// on disk the writer records into the new epoch and releases the snapshot of the checkpoint
/// before. A group too large for a record, opening and closing wait for a checkpoint instead.
pub(crate) struct Log {
    wal: Wal,
    /// The newest durable checkpoint's snapshot: LMDB reuses none of its pages.
    pin: Option<RoTxn<'static, WithoutTls>>,
    /// The snapshot of the checkpoint being made, pinned as well.
    in_flight: Option<RoTxn<'static, WithoutTls>>,
    /// The data file, to copy meta pages from.
    data: File,
    /// Why appends are refused, once the log or a checkpoint failed: whether what followed
    /// reached the disk is unknown, and only an opening sorts that out.
    broken: Option<String>,
    requests: Option<mpsc::SyncSender<wal::Checkpoint>>,
    done: mpsc::Receiver<Result<wal::EpochFile>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// The log of the store in `dir`, whose newest epoch so far is `last_epoch`, with its
    /// checkpoint thread. Nothing is recorded before its first [`Log::checkpoint`].
    pub fn start(
        dir: &std::path::Path,
        last_epoch: u64,
        interval: std::time::Duration,
        env: &Env<WithoutTls>,
    ) -> Result<Log> {
        let data = File::open(dir.join("data.mdb"))
            .map_err(|e| Error::Io(format!("cannot open the data file: {e}")))?;
        let (requests, received) = mpsc::sync_channel::<wal::Checkpoint>(1);
        let (finished, done) = mpsc::sync_channel(1);
        let env = env.clone();
        let thread_dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("umadb-checkpoint".into())
            .spawn(move || {
                while let Ok(request) = received.recv() {
                    let outcome = env
                        .force_sync()
                        .map_err(|e| {
                            Error::Io(format!(
                                "cannot flush the data file for a checkpoint: {}",
                                storage_error(e).message()
                            ))
                        })
                        .and_then(|()| {
                            wal::write_header(&thread_dir, &request).map_err(|e| {
                                Error::Io(format!("cannot write a checkpoint to the log: {e}"))
                            })
                        });
                    if finished.send(outcome).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Log {
            wal: Wal::new(last_epoch, interval),
            pin: None,
            in_flight: None,
            data,
            broken: None,
            requests: Some(requests),
            done,
            thread: Some(thread),
        })
    }

    /// A checkpoint of the last commit, which holds `head`, made here and now (after any in
    /// flight).
    pub fn checkpoint(&mut self, env: &Env<WithoutTls>, head: Position) -> Result<()> {
        self.checkpoint_now(env, head, false)
    }

    /// A checkpoint marked closed: nothing is recorded after it.
    pub fn close(&mut self, env: &Env<WithoutTls>, head: Position) -> Result<()> {
        self.checkpoint_now(env, head, true)
    }

    fn checkpoint_now(
        &mut self,
        env: &Env<WithoutTls>,
        head: Position,
        closed: bool,
    ) -> Result<()> {
        let done = self
            .finish(true)
            .and_then(|()| self.begin(env, head, closed))
            .and_then(|()| self.finish(true));
        self.note(done)
    }

    /// After a group (its record flushed): takes up a checkpoint the thread finished, and
    /// starts the next when one is due.
    fn after_group(&mut self, env: &Env<WithoutTls>, head: Position) {
        if self.broken.is_some() {
            return;
        }
        let finished = self.finish(false);
        if self.note(finished).is_ok()
            && self.in_flight.is_none()
            && self.wal.has_records()
            && self.wal.due()
        {
            let begun = self.begin(env, head, false);
            let _ = self.note(begun);
        }
    }

    /// Pins the last commit's snapshot and hands its checkpoint to the thread.
    fn begin(&mut self, env: &Env<WithoutTls>, head: Position, closed: bool) -> Result<()> {
        let snapshot = env.clone().static_read_txn().map_err(storage_error)?;
        let txn_id = snapshot.id() as u64;
        // Between commits: the meta page LMDB wrote last is this snapshot's.
        let meta = pages::meta_page(&self.data, txn_id)?;
        let request = wal::Checkpoint {
            epoch: self.wal.next_epoch(),
            txn_id,
            head,
            // The records after this point follow the commit: the writer goes on recording
            // them here until the new epoch's header is on disk.
            previous_from: self.wal.end(),
            meta,
            closed,
        };
        self.requests
            .as_ref()
            .ok_or_else(|| Error::Internal("the checkpoint thread is closed".into()))?
            .send(request)
            .map_err(|_| Error::Internal("the checkpoint thread stopped".into()))?;
        self.in_flight = Some(snapshot);
        Ok(())
    }

    /// Takes the outcome of the checkpoint in flight, if any (waiting for it if `wait`): its
    /// epoch takes the records from here on, and its snapshot the pin.
    fn finish(&mut self, wait: bool) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let outcome = if wait {
            self.done.recv().map_err(|_| ())
        } else {
            match self.done.try_recv() {
                Ok(outcome) => Ok(outcome),
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            }
        }
        .unwrap_or_else(|()| Err(Error::Internal("the checkpoint thread stopped".into())));
        let snapshot = self.in_flight.take();
        let file = outcome?;
        self.wal.switch(file);
        self.pin = snapshot;
        Ok(())
    }

    /// A failed checkpoint refuses later appends.
    fn note(&mut self, outcome: Result<()>) -> Result<()> {
        if let Err(e) = &outcome {
            self.broken = Some(e.message().to_string());
        }
        outcome
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.finish(true);
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn run(
    shared: Arc<Shared>,
    receiver: Receiver<Job>,
    max_group: usize,
    index_lag: u64,
    tail: Result<Tail>,
    log: Option<Log>,
) -> Result<()> {
    let mut record = Vec::new();
    let mut index_keys = Vec::new();
    let (tail, mut log) = match (tail, log) {
        (Ok(tail), Some(log)) => (tail, log),
        (tail, _) => {
            let refusal = match tail {
                // Appending would mean indexing events it cannot read.
                Err(e) => Error::Corruption(format!(
                    "appends are refused: the events past the indexed head cannot be indexed \
                     ({}); run 'umadb check' on the store and restore it from a backup",
                    e.message()
                )),
                Ok(_) => Error::Io(
                    "appends are refused: this process opened the store for reading only, or \
                     another process has it open for appending (a running server, say: append \
                     through it)"
                        .into(),
                ),
            };
            while let Ok(job) = receiver.recv() {
                (job.reply)(Err(refusal.clone()));
            }
            // Nothing was written: nothing to close.
            return Ok(());
        }
    };
    shared.recent.extend(tail.indexed_head + 1, tail.events);
    let mut indexed_head = tail.indexed_head;
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_group {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let before = shared.head.load(Ordering::Acquire);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            commit_group(
                &shared,
                &jobs,
                index_lag,
                indexed_head,
                &mut log,
                &mut record,
                &mut index_keys,
            )
        }))
        .unwrap_or_else(|_| {
            Err(Error::Internal(
                "the writer failed unexpectedly; the group was not written".into(),
            ))
        });
        match outcome {
            Ok((results, committed)) => {
                let head = committed.head;
                let durable = committed.durable;
                shared.recent.extend(before + 1, committed.events);
                if committed.indexed {
                    // Keep the keys readers on the snapshot before this commit still match on,
                    // unless that is a window of large groups better served by scanning.
                    shared.recent.forget_through(indexed_head);
                    if shared.recent.len() as u64 > index_lag.saturating_mul(2).max(1024) {
                        shared.recent.forget_through(head);
                    }
                    indexed_head = head;
                }
                if head != before {
                    shared.publish_head(head);
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let result = match (&durable, result) {
                        (Err(e), Ok(_)) => Err(Error::Io(format!(
                            "the append was committed but could not be confirmed on disk: {}",
                            e.message()
                        ))),
                        (_, result) => result,
                    };
                    (job.reply)(result);
                }
                log.after_group(&shared.env, head);
            }
            Err(e) => {
                for job in jobs {
                    (job.reply)(Err(e.clone()));
                }
            }
        }
    }
    // Closing: the next opening finds nothing to apply, and takes the data file as it is.
    match &log.broken {
        None => log.checkpoint_now(&shared.env, shared.head.load(Ordering::Acquire), true),
        Some(reason) => Err(Error::Io(format!(
            "no closing checkpoint was written: the log failed earlier ({reason})"
        ))),
    }
}

/// Applies and commits a group. The outer error fails every request (nothing was written); the
/// inner results are per request.
fn commit_group(
    shared: &Shared,
    jobs: &[Job],
    index_lag: u64,
    indexed_head: Position,
    log: &mut Log,
    record: &mut Vec<u8>,
    index_keys: &mut Vec<(Kind, u32, Position)>,
) -> Result<(Vec<Result<Position>>, Committed)> {
    if let Some(reason) = &log.broken {
        return Err(Error::Io(format!(
            "appends are refused since a flush of the store failed and what it held may not \
             be on disk ({reason}); restart the server: opening the store brings it back to \
             its last durable state"
        )));
    }
    let dbs = &shared.dbs;
    let mut txn = shared.env.write_txn().map_err(storage_error)?;
    let committed_head = shared.head.load(Ordering::Acquire);
    let mut group = Group::new(dbs, &shared.recent, committed_head, std::mem::take(record));
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let result = match group.check(&txn, &job.request) {
            Ok(Decision::Write) => Ok(group.write(&mut txn, &job.request)?),
            Ok(Decision::AlreadyRecorded(position)) => Ok(position),
            Err(e) => Err(e),
        };
        results.push(result);
    }
    let events = group.event_keys();
    let indexed = group.head - indexed_head > index_lag;
    if indexed {
        // One buffer for every indexing commit: tens of thousands of entries, freshly allocated
        // each time they cost page faults (the allocator's fresh pages are zeroed).
        let keys = index_keys;
        keys.clear();
        if !shared
            .recent
            .index_entries_into(indexed_head + 1, committed_head, keys)
        {
            return Err(Error::Internal(format!(
                "the writer lost the keys of the events after the indexed head \
                 {indexed_head}; the group was not written"
            )));
        }
        keys.append(&mut group.keys);
        // Ascending per key, as chunks are extended; an event naming a tag twice is listed once.
        keys.sort_unstable_by_key(|&(kind, id, position)| (kind as u8, id, position));
        keys.dedup();
        add_to_index(&mut txn, dbs, keys, &mut group.buf)?;
        // A rare huge commit's entries are not kept for good (16 bytes each).
        keys.clear();
        keys.shrink_to(KEPT_INDEX_KEYS);
        dbs.meta
            .put(
                &mut txn,
                format::META_INDEXED_HEAD,
                &group.head.to_be_bytes(),
            )
            .map_err(storage_error)?;
    }
    let recorded = group.writes && !group.overflow;
    let txn_id = txn.id() as u64;
    if recorded {
        // Written before the commit, so that a failure here leaves nothing written.
        log.wal
            .write(&mut group.record, txn_id, committed_head)
            .map_err(|e| Error::Io(format!("cannot write the log: {e}")))?;
    }
    *record = std::mem::take(&mut group.record);
    if let Err(e) = commit(shared, txn) {
        // The record must not be applied at the next opening: its group was not written.
        if recorded {
            if let Err(withdraw) = log.wal.withdraw() {
                log.broken = Some(format!(
                    "a failed commit's log record could not be withdrawn: {withdraw}"
                ));
            }
        }
        return Err(storage_error(e));
    }
    let durable = if recorded {
        log.wal.flush().map_err(|e| {
            let message = format!("cannot flush the log: {e}");
            log.broken = Some(message.clone());
            Error::Io(message)
        })
    } else if group.writes {
        // Too large for a record: a checkpoint makes it durable.
        log.checkpoint(&shared.env, group.head)
    } else {
        // Nothing, or only indexing, which opening redoes from the log if it is lost.
        Ok(())
    };
    let committed = Committed {
        head: group.head,
        indexed,
        events,
        durable,
    };
    Ok((results, committed))
}

/// Commits the writer's transaction. Tests can make it fail instead (`Shared::fail_next_commit`),
/// to see what the writer does when LMDB's commit fails after the group's journal record was
/// written.
fn commit(
    #[cfg_attr(not(test), allow(unused_variables))] shared: &Shared,
    txn: RwTxn,
) -> heed::Result<()> {
    #[cfg(test)]
    if shared.fail_next_commit.swap(false, Ordering::AcqRel) {
        drop(txn);
        return Err(heed::Error::Io(std::io::Error::other(
            "commit failure injected by a test",
        )));
    }
    txn.commit()
}

/// Applies the journal record (of a build before the log) of the commit after the store's last
/// one, if `records` hold it: a group that was answered, whose meta page a crash kept from the
/// disk (see `journal.rs`). Says what it applied, if anything.
///
/// `upgraded`: opening committed one transaction of its own first (a format upgrade), after
/// the one the record would follow.
pub(crate) fn replay(
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    records: Vec<journal::Record>,
    upgraded: bool,
) -> Result<Option<journal::JournalReplay>> {
    let mut txn = env.write_txn().map_err(storage_error)?;
    let next = txn.id() as u64 - u64::from(upgraded);
    let head = match dbs.events.last(&txn).map_err(storage_error)? {
        Some((key, _)) => format::decode_position_key(key)?,
        None => 0,
    };
    let Some(record) = records
        .into_iter()
        .find(|record| record.txn_id == next && record.head_before == head)
    else {
        return Ok(None);
    };
    let (requests, after) = apply_record(&mut txn, dbs, head, &record.body)?;
    txn.commit().map_err(storage_error)?;
    env.force_sync().map_err(storage_error)?;
    Ok(Some(JournalReplay {
        records: 1,
        requests,
        events: after - head,
        head_before: head,
    }))
}

/// Applies the log's records after its checkpoint (`wal.rs`), in order, in one commit, flushed.
/// Each must continue from the head the ones before it left.
pub(crate) fn replay_log(
    env: &Env<WithoutTls>,
    dbs: &Dbs,
    records: &[wal::Record],
) -> Result<Option<JournalReplay>> {
    if records.is_empty() {
        return Ok(None);
    }
    let mut txn = env.write_txn().map_err(storage_error)?;
    let start = match dbs.events.last(&txn).map_err(storage_error)? {
        Some((key, _)) => format::decode_position_key(key)?,
        None => 0,
    };
    let (mut head, mut requests) = (start, 0);
    for record in records {
        if record.head_before != head {
            return Err(format::corrupt(format!(
                "the log's record of transaction {} continues from position {}, but the store \
                 and the records before it end at position {head}",
                record.txn_id, record.head_before
            )));
        }
        let (count, after) = apply_record(&mut txn, dbs, head, &record.body)?;
        requests += count;
        head = after;
    }
    txn.commit().map_err(storage_error)?;
    env.force_sync().map_err(storage_error)?;
    Ok(Some(JournalReplay {
        records: records.len(),
        requests,
        events: head - start,
        head_before: start,
    }))
}

/// Writes the requests of a record's body onto `head`; returns how many and the head after.
fn apply_record(
    txn: &mut RwTxn,
    dbs: &Dbs,
    head: Position,
    body: &[u8],
) -> Result<(usize, Position)> {
    let requests = format::decode_journal_body(body)?;
    let recent = Recent::default();
    let mut group = Group::new(dbs, &recent, head, Vec::new());
    for request in &requests {
        match group.check(txn, request)? {
            Decision::Write => {
                group.write(txn, request)?;
            }
            Decision::AlreadyRecorded(_) => {
                return Err(Error::Internal(
                    "a recorded request without a condition was found already recorded".into(),
                ))
            }
        }
    }
    Ok((requests.len(), group.head))
}

enum Decision {
    Write,
    /// An idempotent retry of an append already recorded, ending at this position.
    AlreadyRecorded(Position),
}

struct Group<'a> {
    dbs: &'a Dbs,
    recent: &'a Recent,
    /// Head before this group.
    committed_head: Position,
    head: Position,
    /// Events written by earlier requests of this group, not yet in the indexes.
    pending: Vec<(Position, &'a Event)>,
    /// Index entries of this group's events.
    keys: Vec<(Kind, u32, Position)>,
    buf: Vec<u8>,
    /// The log record of the requests written so far (`wal.rs`).
    record: Vec<u8>,
    /// Whether any request wrote something (events or tracking info).
    writes: bool,
    /// Whether the record outgrew `wal::MAX_RECORD`: it is dropped, and a checkpoint makes the
    /// group's commit durable instead.
    overflow: bool,
}

impl<'a> Group<'a> {
    fn new(dbs: &'a Dbs, recent: &'a Recent, head: Position, mut record: Vec<u8>) -> Self {
        Wal::new_record(&mut record);
        Group {
            dbs,
            recent,
            committed_head: head,
            head,
            pending: Vec::new(),
            keys: Vec::new(),
            buf: Vec::new(),
            record,
            writes: false,
            overflow: false,
        }
    }

    /// Everything that can reject a request, decided before it writes anything.
    fn check(&self, txn: &RwTxn, request: &AppendRequest) -> Result<Decision> {
        request.validate()?;
        let count = request.events.len() as u64;
        if self.head.saturating_add(count) > MAX_POSITION {
            return Err(Error::Io(format!(
                "the store cannot hold more than {MAX_POSITION} events"
            )));
        }
        if let Some(condition) = &request.condition {
            if let Some(decision) = self.check_condition(txn, condition, &request.events)? {
                return Ok(decision);
            }
        }
        if let Some(tracking) = &request.tracking_info {
            if let Some(recorded) = tracking_position(txn, self.dbs, &tracking.source)? {
                if tracking.position <= recorded {
                    return Err(Error::Integrity(format!(
                        "tracking position {} for source {:?} is not after the recorded position {recorded}",
                        tracking.position, tracking.source
                    )));
                }
            }
        }
        Ok(Decision::Write)
    }

    /// `None` when the condition passes.
    fn check_condition(
        &self,
        txn: &RwTxn,
        condition: &AppendCondition,
        events: &[Event],
    ) -> Result<Option<Decision>> {
        let after = condition.after.unwrap_or(0);
        let keys: Option<Vec<Uuid>> = if events.is_empty() {
            None
        } else {
            events.iter().map(Event::idempotency_key).collect()
        };
        let wanted = keys.as_ref().map_or(1, Vec::len);
        let matches = self.first_matches(txn, condition, after, wanted)?;
        let Some(&first_match) = matches.first() else {
            return Ok(None);
        };
        if let Some(keys) = keys {
            if matches.len() == keys.len() {
                let mut same = true;
                for (&position, key) in matches.iter().zip(&keys) {
                    if stored_uuid(txn, self.dbs, position)? != Some(*key) {
                        same = false;
                        break;
                    }
                }
                if same {
                    return Ok(Some(Decision::AlreadyRecorded(
                        *matches.last().unwrap_or(&first_match),
                    )));
                }
            }
        }
        Err(Error::Integrity(format!(
            "append condition failed: event at position {first_match} matches the condition's query and is after position {after}"
        )))
    }

    /// Positions of the first `wanted` events matching the condition after `after`, in the
    /// committed log (via the indexes) and then among this group's pending events.
    fn first_matches(
        &self,
        txn: &RwTxn,
        condition: &AppendCondition,
        after: Position,
        wanted: usize,
    ) -> Result<Vec<Position>> {
        let query = &condition.fail_if_events_match;
        let mut found = matching_positions(
            txn,
            self.dbs,
            self.recent,
            query,
            after.saturating_add(1),
            self.committed_head,
            wanted,
        )?;
        for &(position, event) in &self.pending {
            if found.len() >= wanted {
                break;
            }
            if position > after && query.matches(event) {
                found.push(position);
            }
        }
        Ok(found)
    }

    fn write(&mut self, txn: &mut RwTxn, request: &'a AppendRequest) -> Result<Position> {
        let dbs = self.dbs;
        let first = self.head + 1;
        let tracked = request.tracking_info.is_some() && !request.events.is_empty();
        let mut keyed: Vec<(Kind, &'a str, Position)> = Vec::new();
        // Once the record has outgrown the log it is dropped: nothing more goes into it.
        if !self.overflow {
            format::put_journal_request_start(&mut self.record, request.events.len());
        }
        self.writes |= !request.events.is_empty() || request.tracking_info.is_some();
        for (i, event) in request.events.iter().enumerate() {
            let position = first + i as u64;
            format::encode_event(event, tracked, &mut self.buf);
            if !self.overflow {
                format::put_journal_event(&mut self.record, &self.buf);
            }
            dbs.events
                .put_with_flags(
                    txn,
                    PutFlags::APPEND,
                    &format::position_key(position),
                    &self.buf,
                )
                .map_err(storage_error)?;
            keyed.push((Kind::EventType, &event.event_type, position));
            keyed.extend(
                event
                    .tags
                    .iter()
                    .map(|tag| (Kind::Tag, tag.as_str(), position)),
            );
            self.pending.push((position, event));
        }
        // Types and tags in key order (positions ascending within each): each distinct string
        // is looked up once, all of them in one cursor walk through the intern table.
        keyed.sort_unstable_by(|a, b| (a.0 as u8, a.1, a.2).cmp(&(b.0 as u8, b.1, b.2)));
        let mut names: Vec<(Kind, &str)> =
            keyed.iter().map(|&(kind, name, _)| (kind, name)).collect();
        names.dedup();
        let ids = intern::get_or_create_sorted(txn, dbs, &names)?;
        let mut named = names.iter().zip(ids).peekable();
        for (kind, name, position) in keyed {
            while named.next_if(|&(&n, _)| n != (kind, name)).is_some() {}
            let Some(&(_, id)) = named.peek() else {
                return Err(Error::Internal(format!(
                    "the writer lost the id of {kind:?} {name:?}; the group was not written"
                )));
            };
            self.keys.push((kind, id, position));
        }
        self.head += request.events.len() as u64;
        if !self.overflow {
            format::put_journal_request_end(&mut self.record, request.tracking_info.as_ref());
            if self.record.len() - wal::HEADER_LEN > wal::MAX_RECORD {
                self.overflow = true;
                self.record.truncate(wal::HEADER_LEN);
            }
        }
        if let Some(tracking) = &request.tracking_info {
            let source_id = intern::get_or_create(txn, dbs, Kind::Source, &tracking.source)?;
            dbs.tracking
                .put(
                    txn,
                    &source_id.to_be_bytes(),
                    &tracking.position.to_be_bytes(),
                )
                .map_err(storage_error)?;
            if tracked {
                let record = format::encode_append_tracking(first, tracking);
                dbs.append_tracking
                    .put(txn, &format::position_key(self.head), &record)
                    .map_err(storage_error)?;
            }
        }
        Ok(if request.events.is_empty() {
            0
        } else {
            self.head
        })
    }

    /// The keys of the events this group wrote, in order.
    fn event_keys(&self) -> Vec<EventKeys> {
        let count = (self.head - self.committed_head) as usize;
        let mut types = vec![0; count];
        let mut tags = vec![Vec::new(); count];
        for &(kind, id, position) in &self.keys {
            let i = (position - self.committed_head - 1) as usize;
            match kind {
                Kind::EventType => types[i] = id,
                _ => tags[i].push(id),
            }
        }
        types
            .into_iter()
            .zip(tags)
            .map(|(event_type, tags)| EventKeys::new(event_type, tags))
            .collect()
    }
}

/// Adds `keys` (sorted by kind, id and position, no repeats) to the index chunks.
///
/// A key's newest chunk is its open chunk, under a key of its own (`format::open_chunk_key`)
/// in a range that holds nothing else, so the open chunks an indexing commit rewrites lie packed
/// together. One cursor walks that range backwards from the highest key to update, stepping
/// over the open chunks of keys it leaves alone, or seeking when the next key is more than
/// `WALK_LIMIT` entries away. Each key's open chunk is read where the cursor stands and
/// rewritten in place, so updating a key costs a few cursor steps instead of a lookup and an
/// insert, each from the root. Chunks that filled go under their base among the full chunks,
/// and new keys' open chunks are inserted, afterwards in key order, by plain puts: new tags'
/// keys all land at the open range's end, but `MDB_APPEND` would fill those pages to the brim,
/// and as every tag's chunk grows with later events they would all split (1,000,000
/// prepopulated events took 2.4% more disk with it).
fn add_to_index(
    txn: &mut RwTxn,
    dbs: &Dbs,
    keys: &[(Kind, u32, Position)],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let runs: Vec<&[(Kind, u32, Position)]> =
        keys.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)).collect();
    let open_key = |run: &[(Kind, u32, Position)]| format::open_chunk_key(run[0].0, run[0].1);
    let mut fresh: Vec<([u8; INDEX_KEY_LEN], Vec<u8>)> = Vec::new();
    let mut value = Vec::new();
    let mut next = runs.len();
    'seek: while let Some(&run) = next.checked_sub(1).and_then(|i| runs.get(i)) {
        let hi = open_key(run);
        let mut walk = dbs
            .index
            .rev_range_mut(txn, &(Bound::Unbounded, Bound::Included(hi.as_slice())))
            .map_err(storage_error)?;
        let mut at = step(&mut walk)?;
        while let Some(&run) = next.checked_sub(1).and_then(|i| runs.get(i)) {
            let (kind, id, _) = run[0];
            let key = open_key(run);
            let mut steps = 0;
            while let Some((stored_key, _)) = &at {
                if stored_key[..] <= key[..] {
                    break;
                }
                if steps == WALK_LIMIT {
                    continue 'seek;
                }
                at = step(&mut walk)?;
                steps += 1;
            }
            let stored = match &at {
                Some((stored_key, value)) if *stored_key == key => {
                    let open = format::decode_open_chunk(kind, id, value)?;
                    Some((open.base, open.first, open.bytes.to_vec()))
                }
                _ => None,
            };
            let in_place = stored.is_some();
            let mut chunks = DirtyKey {
                first: stored.as_ref().map(|&(_, first, _)| first),
                full: Vec::new(),
                open: stored.map(|(base, _, bytes)| DirtyChunk {
                    base,
                    form: Form::Stored(bytes),
                }),
            };
            for &(_, _, position) in run {
                chunks.add(kind, id, position)?;
            }
            for chunk in &mut chunks.full {
                let key = format::index_key(kind, id, chunk.base);
                fresh.push((key, chunk.encoded(buf)?.to_vec()));
            }
            if let (Some(open), Some(first)) = (&mut chunks.open, chunks.first) {
                let base = open.base;
                format::encode_open_chunk(base, first, open.encoded(buf)?, &mut value);
                if in_place {
                    // SAFETY: the cursor stands on `key` (read as `stored`, whose bytes were
                    // copied), and no slice read through it is used after this write: `at` is
                    // replaced right below.
                    unsafe { walk.put_current(&key, &value) }.map_err(storage_error)?;
                } else {
                    fresh.push((key, value.clone()));
                }
            }
            if in_place {
                at = step(&mut walk)?;
            }
            next -= 1;
        }
    }
    fresh.sort_unstable_by_key(|&(key, _)| key);
    for (key, bytes) in fresh {
        dbs.index.put(txn, &key, &bytes).map_err(storage_error)?;
    }
    Ok(())
}

/// Moves the index walk back one entry.
fn step<'t>(
    walk: &mut RwRevRange<'t, Bytes, Bytes>,
) -> Result<Option<([u8; INDEX_KEY_LEN], &'t [u8])>> {
    match walk.next() {
        None => Ok(None),
        Some(Err(e)) => Err(storage_error(e)),
        Some(Ok((key, bytes))) => {
            let key = key.try_into().map_err(|_| {
                format::corrupt(format!(
                    "the store is damaged: the index holds a key of {} bytes, where index keys \
                     are {INDEX_KEY_LEN}",
                    key.len()
                ))
            })?;
            Ok(Some((key, bytes)))
        }
    }
}

/// The chunks of one index key touched by the group: the newest (open) one, any that filled
/// up during the group, and the key's first position.
struct DirtyKey {
    first: Option<Position>,
    full: Vec<DirtyChunk>,
    open: Option<DirtyChunk>,
}

struct DirtyChunk {
    base: Position,
    form: Form,
}

/// A chunk in its stored form (as read from the store, or new in the gap form), extended in
/// place while that works (`chunk::append`), or decoded. A gap-form chunk that reaches
/// `MAX_CHUNK_BYTES` is decoded and goes on in the roaring form when that is smaller (runs).
enum Form {
    Stored(Vec<u8>),
    Decoded(RoaringBitmap),
}

impl DirtyKey {
    fn add(&mut self, kind: Kind, id: u32, position: Position) -> Result<()> {
        if let Some(open) = &mut self.open {
            if let Ok(offset) = u32::try_from(position - open.base) {
                if let Form::Stored(bytes) = &mut open.form {
                    if chunk::append(bytes, offset, MAX_CHUNK_BYTES) {
                        return Ok(());
                    }
                    let mut bitmap = eval::decode_bitmap(kind, id, open.base, bytes)?;
                    // A gap-form chunk that filled up goes on in the roaring form only when that
                    // leaves it room (runs); otherwise it stays as stored and is full.
                    let goes_on = bytes.first() != Some(&chunk::GAP_FORM) || {
                        bitmap.optimize();
                        bitmap.serialized_size() < MAX_CHUNK_BYTES
                    };
                    if goes_on {
                        open.form = Form::Decoded(bitmap);
                    }
                }
                if !open.is_full() {
                    if let Form::Decoded(bitmap) = &mut open.form {
                        bitmap.insert(offset);
                        return Ok(());
                    }
                }
            }
        }
        // A new chunk starts at this position, so offset 0 is always its first position.
        let fresh = DirtyChunk {
            base: position,
            form: Form::Stored(chunk::first_offset_only()),
        };
        if let Some(full) = self.open.replace(fresh) {
            self.full.push(full);
        }
        self.first.get_or_insert(position);
        Ok(())
    }
}

impl DirtyChunk {
    /// The chunk as stored.
    fn encoded<'b>(&'b mut self, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        match &mut self.form {
            Form::Stored(bytes) => Ok(bytes),
            Form::Decoded(bitmap) => {
                bitmap.optimize();
                buf.clear();
                bitmap
                    .serialize_into(&mut *buf)
                    .map_err(|e| Error::Internal(format!("cannot encode an index chunk: {e}")))?;
                Ok(buf)
            }
        }
    }

    /// Full when its stored form would exceed MAX_CHUNK_BYTES even after compression. A chunk
    /// still in its stored form here is one that could not be extended in place and was kept
    /// as it is.
    fn is_full(&mut self) -> bool {
        let Form::Decoded(bitmap) = &mut self.form else {
            return true;
        };
        if bitmap.serialized_size() < MAX_CHUNK_BYTES {
            return false;
        }
        bitmap.optimize();
        bitmap.serialized_size() >= MAX_CHUNK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::super::{format, journal, staging, wal, Store};
    use crate::error::Error;
    use crate::types::{AppendRequest, Event, ReadRequest};
    use std::sync::atomic::Ordering;

    fn append(store: &Store, name: &str) -> crate::error::Result<u64> {
        store.append(AppendRequest {
            events: vec![Event::new(name, ["t"], name.as_bytes().to_vec())],
            ..Default::default()
        })
    }

    fn types(store: &Store) -> Vec<String> {
        store
            .read_all(ReadRequest::default())
            .expect("read")
            .0
            .into_iter()
            .map(|e| e.event.event_type)
            .collect()
    }

    /// A group whose commit fails after its log record was written is answered with the
    /// error, and its record is withdrawn: otherwise the next opening would apply it and write
    /// the group its caller was told failed.
    #[test]
    fn a_failed_commit_withdraws_its_log_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let store = Store::open(&path).expect("open");
        append(&store, "First").expect("first append");
        store.shared.fail_next_commit.store(true, Ordering::Release);
        match append(&store, "Failed") {
            Err(Error::Io(message)) => assert!(message.contains("injected"), "{message}"),
            other => panic!("the failed commit was answered {other:?}"),
        }
        assert_eq!(types(&store), ["First"]);
        let records = wal::recover(&path)
            .expect("log")
            .expect("checkpoint")
            .records;
        assert_eq!(
            records.iter().map(|r| r.head_before).collect::<Vec<_>>(),
            [0],
            "the log holds the first group's record alone"
        );
        drop(store);

        let store = Store::open(&path).expect("reopen");
        assert!(store.journal_replay().is_none());
        assert_eq!(types(&store), ["First"]);
        // The store goes on: the next group takes the failed one's transaction and position.
        assert_eq!(append(&store, "Second").expect("append after"), 2);
        drop(store);
        let store = Store::open(&path).expect("reopen again");
        assert_eq!(types(&store), ["First", "Second"]);
    }

    /// A store as a build before the log left it after a crash: "First" committed, and the
    /// next commit's journal record (of "Second", answered, its meta page lost) beside it; no
    /// log files. `format_version`: the format stamp that build wrote (an older one is upgraded
    /// at opening, in a commit of its own before the record is applied).
    fn store_of_a_build_before_the_log(path: &std::path::Path, format_version: u32) {
        append(&Store::open(path).expect("open"), "First").expect("first append");
        if format_version != format::FORMAT_VERSION {
            // With one event, not yet indexed, the stamp alone makes the store one of that
            // version.
            staging::stamp_format_version(path, format_version).expect("stamp");
        }
        let second = AppendRequest {
            events: vec![Event::new("Second", ["t"], b"Second".to_vec())],
            condition: None,
            tracking_info: None,
        };
        staging::stage_crash_of_a_build_before_the_log(path, &[second]).expect("journal record");
    }

    /// The record is applied once, and the journal files go once a checkpoint has made them
    /// stale.
    #[test]
    fn a_journal_record_of_a_build_before_the_log_is_applied_once_and_its_files_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        store_of_a_build_before_the_log(&path, format::FORMAT_VERSION);
        let store = Store::open(&path).expect("open with the journal");
        assert_eq!(store.upgraded_from(), None);
        let replay = store.journal_replay().expect("a replay");
        assert_eq!(
            (replay.records, replay.events, replay.head_before),
            (1, 1, 1)
        );
        assert_eq!(types(&store), ["First", "Second"]);
        for slot in 0..2 {
            assert!(!journal::file_path(&path, slot).exists());
        }
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert!(store.journal_replay().is_none());
        assert_eq!(types(&store), ["First", "Second"]);
    }

    /// A store of an older format with a journal record: opening upgrades the format in a
    /// commit of its own, which takes the transaction id the record was written for; the record
    /// still applies (once) on top of it.
    #[test]
    fn a_journal_record_is_applied_after_the_format_upgrade_of_its_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        store_of_a_build_before_the_log(&path, 2);
        let store = Store::open(&path).expect("open with the journal");
        assert_eq!(store.upgraded_from(), Some(2));
        let replay = store.journal_replay().expect("a replay after the upgrade");
        assert_eq!(
            (replay.records, replay.events, replay.head_before),
            (1, 1, 1)
        );
        assert_eq!(types(&store), ["First", "Second"]);
        assert!(store.check(|_| {}).expect("check").is_ok());
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert_eq!(
            (store.upgraded_from(), store.journal_replay()),
            (None, None)
        );
        assert_eq!(types(&store), ["First", "Second"]);
        assert_eq!(append(&store, "Third").expect("append"), 3);
    }
}
