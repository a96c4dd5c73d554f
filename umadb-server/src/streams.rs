//! The producers behind the streaming calls: a read pages through a [`Reader`]; a subscription
//! pages through the log with `Store::read_range_with` and, when caught up, waits until the
//! fanout sees a commit with an event it matches.

use crate::encoded::{BatchEncoder, EncodedBatch, EncodedResponse, HeadField};
use crate::fanout::{Follow, Wake};
use crate::outbox::{BatchSizer, Sender, Stop};
use std::sync::Arc;
use tonic::Status;
use umadb_core::{Error, Position, Query, Reader, Store};
use umadb_proto::status_from_error;

/// How a read or subscription is paged.
#[derive(Clone, Copy)]
pub(crate) struct Paging {
    /// Most events per batch (the client's batch size, capped).
    pub batch_size: usize,
    /// Most bytes per response message.
    pub max_message_bytes: usize,
}

/// A message of a read, and the position of its last event (none for a message that only
/// tells the head).
pub(crate) type ReadMessage = (EncodedResponse, Option<Position>);

/// A read being streamed. Each batch is a fresh read transaction, encoded into messages where
/// it was read; every message carries the read's head. A read that matches nothing still sends
/// one message, to tell the head.
pub(crate) struct ReadStream {
    store: Arc<Store>,
    reader: Reader,
    limited: bool,
    max_bytes: usize,
    sizer: BatchSizer,
}

impl ReadStream {
    pub fn new(store: Arc<Store>, reader: Reader, limited: bool, paging: Paging) -> Self {
        ReadStream {
            store,
            reader,
            limited,
            max_bytes: paging.max_message_bytes,
            sizer: BatchSizer::new(paging.batch_size, paging.max_message_bytes),
        }
    }

    /// The first batch's messages, read on the calling thread: a first batch is small (at most
    /// `INLINE_BATCH` events), so this costs less than a hand-off to a read thread, and a read
    /// it completes (a typical tag query) is answered without a task of its own.
    pub fn first(&mut self) -> Result<Vec<ReadMessage>, Status> {
        let count = self.sizer.next().min(INLINE_BATCH);
        let batch = next_encoded(&mut self.reader, count, self.limited, self.max_bytes)
            .map_err(|e| failed(&self.store, e))?;
        let Some(batch) = batch else {
            return Ok(vec![(EncodedResponse::head_only(self.reader.head()), None)]);
        };
        self.sizer.observe_largest(Some(batch.largest));
        let messages = batch.messages.into_iter();
        Ok(messages
            .map(|(message, last)| (message, Some(last)))
            .collect())
    }

    /// Whether the messages read so far are the whole read.
    pub fn is_complete(&self) -> bool {
        self.reader.is_complete()
    }

    /// Sends `first` (from [`ReadStream::first`]), then the rest of the read.
    pub async fn run(
        self,
        first: Vec<ReadMessage>,
        mut out: Sender<EncodedResponse>,
    ) -> Result<(), Status> {
        let ReadStream {
            store,
            mut reader,
            limited,
            max_bytes,
            mut sizer,
        } = self;
        let mut last_sent: Option<Position> = None;
        for (message, last) in first {
            send(&mut out, message, last_sent).await?;
            last_sent = last.or(last_sent);
        }
        loop {
            if out.shutting_down() {
                return Err(read_interrupted(last_sent));
            }
            if reader.is_complete() {
                return Ok(());
            }
            let count = sizer.next();
            let batch = if count <= INLINE_BATCH {
                next_encoded(&mut reader, count, limited, max_bytes)
            } else {
                // Encoding is most of a long read's CPU: done on the read thread too.
                let (returned, batch) = blocking(move || {
                    let batch = next_encoded(&mut reader, count, limited, max_bytes);
                    (reader, batch)
                })
                .await?;
                reader = returned;
                batch
            };
            let Some(batch) = batch.map_err(|e| failed(&store, e))? else {
                return Ok(());
            };
            sizer.observe_largest(Some(batch.largest));
            for (message, last) in batch.messages {
                send(&mut out, message, last_sent).await?;
                last_sent = Some(last);
            }
        }
    }
}

/// The reader's next batch of at most `count` events, encoded into messages.
fn next_encoded(
    reader: &mut Reader,
    count: usize,
    limited: bool,
    max_bytes: usize,
) -> Result<Option<EncodedBatch>, Error> {
    // With a limit the head is the last event returned so far: when a batch is cut into
    // several messages, that is the last event of each message. Without, it is the head when
    // the read began.
    let head = if limited {
        HeadField::LastEvent
    } else {
        HeadField::Fixed(reader.head())
    };
    let mut encoder = BatchEncoder::new(head, max_bytes);
    Ok(reader
        .next_batch_with(count, |event| encoder.push(event))?
        .map(|_| encoder.finish()))
}

async fn send<T>(
    out: &mut Sender<T>,
    message: T,
    last_sent: Option<Position>,
) -> Result<(), Status> {
    match out.send(message).await {
        Ok(()) => Ok(()),
        // Nobody is listening any more; the status goes nowhere.
        Err(Stop::ClientGone) => Err(Status::cancelled("the client cancelled the read")),
        Err(Stop::Shutdown) => Err(read_interrupted(last_sent)),
    }
}

/// A read cut short must not look complete to the client.
fn read_interrupted(last_sent: Option<Position>) -> Status {
    let resume = match last_sent {
        Some(p) => format!("; the last event sent was at position {p}"),
        None => String::new(),
    };
    status_from_error(&Error::Transport(format!(
        "the server is shutting down and ended the read before it was complete{resume}; read again"
    )))
}

/// What a subscription follows.
pub(crate) struct Subscription {
    pub store: Arc<Store>,
    /// Moved after every commit that holds an event the query matches.
    pub follow: Follow,
    pub query: Arc<Query>,
    /// Only events after this position.
    pub after: Position,
    /// End after this many events.
    pub limit: Option<u64>,
    pub paging: Paging,
}

/// Streams every event matching the query after `after`: the recorded ones, then new ones as
/// they commit, until `limit` events were sent, the client leaves, or the server shuts down
/// (which ends the stream cleanly). Each batch is encoded where it was read, its messages
/// carrying `head`.
pub(crate) async fn subscribe(
    subscription: Subscription,
    mut out: Sender<EncodedResponse>,
    head: HeadField,
) -> Result<(), Status> {
    let Subscription {
        store,
        mut follow,
        query,
        mut after,
        limit,
        paging,
    } = subscription;
    let max_bytes = paging.max_message_bytes;
    let mut sizer = BatchSizer::new(paging.batch_size, max_bytes);
    let mut remaining = limit;
    // The watch's value when a read last reached its position with nothing left to read.
    let mut read_to: Option<Wake> = None;
    loop {
        if remaining == Some(0) {
            return Ok(());
        }
        let wake = *follow.wake.borrow_and_update();
        let head_now = wake.head;
        if after >= head_now {
            match out.wait(follow.wake.changed()).await {
                Ok(Ok(())) => continue,
                // The fanout is gone: the server is stopping.
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
        let count = remaining.map_or(sizer.next(), |r| {
            sizer.next().min(usize::try_from(r).unwrap_or(usize::MAX))
        });
        let range = move |store: &Store, query: &Query| {
            let mut encoder = BatchEncoder::new(head, max_bytes);
            store
                .read_range_with(query, after + 1, head_now, count, |event| {
                    encoder.push(event)
                })
                .map(|_| encoder.finish())
        };
        // The events to read, as the fanout counted them, when it counted them all since
        // this subscription last read up to `after`.
        let pending = read_to
            .filter(|read| read.head == after)
            .and_then(|read| wake.matched_since(&read));
        let batch = if pending.is_some_and(|n| n <= INLINE_BATCH as u64)
            || head_now - after <= INLINE_RANGE
        {
            // A few events, or a few new positions: cheaper to look at them here than to hand
            // them to a read thread, which matters when many subscriptions wake on each
            // commit. A query that matches few of many new positions finds them through the
            // indexes and the window of recent events, at the cost of what it matches.
            range(&store, &query)
        } else {
            let (range_store, range_query) = (store.clone(), query.clone());
            blocking(move || range(&range_store, &range_query)).await?
        }
        .map_err(|e| failed(&store, e))?;
        // A short batch means nothing else matches up to `head_now`.
        after = match batch.last() {
            Some(last) if batch.events == count => last,
            _ => head_now,
        };
        read_to = (after == head_now).then_some(wake);
        if let Some(r) = remaining.as_mut() {
            *r -= batch.events as u64;
        }
        sizer.observe_largest((batch.events > 0).then_some(batch.largest));
        for (message, _) in batch.messages {
            if out.send(message).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Read batches of at most this many events are read on the async thread.
const INLINE_BATCH: usize = 16;

/// Ranges of at most this many new positions are read on the async thread.
const INLINE_RANGE: Position = 64;

/// Runs blocking store work off the async threads.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    crate::readpool::run(work).await.ok_or_else(|| {
        status_from_error(&Error::Internal(
            "a storage read failed unexpectedly".to_string(),
        ))
    })
}

fn failed(store: &Store, e: Error) -> Status {
    crate::service::log_failure(store, &e);
    status_from_error(&e)
}
