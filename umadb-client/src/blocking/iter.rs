//! Blocking iterators over reads and subscriptions, fed by a task on the client's runtime.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::OwnedRuntime;
use crate::stream::BatchSource;
use crate::{Error, Position, Result, SequencedEvent};

/// Batches received ahead of the consumer: enough to overlap network and processing, few
/// enough that memory stays bounded (the server cuts batches at 4 MiB).
const PREFETCH_BATCHES: usize = 2;

/// Stops a blocking read or subscription from any thread. The iterator then ends with
/// [`Error::Cancelled`], waking up if it is waiting for events, and the call is cancelled on
/// the server. Cheap to clone.
///
/// ```no_run
/// # fn demo(client: umadb_client::blocking::Client) -> umadb_client::Result<()> {
/// let subscription = client.subscribe(None, None)?;
/// let handle = subscription.cancel_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(5));
///     handle.cancel();
/// });
/// for event in subscription {
///     match event {
///         Ok(event) => println!("{}", event.position),
///         Err(umadb_client::Error::Cancelled(_)) => break,
///         Err(other) => return Err(other),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CancelHandle {
    cancelled: Arc<watch::Sender<bool>>,
}

impl CancelHandle {
    fn new() -> Self {
        CancelHandle {
            cancelled: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Cancels the read or subscription. Calling it again does nothing.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }
}

enum Message {
    Batch(Vec<SequencedEvent>, Option<Position>),
    End(Option<Position>),
    Failed(Error),
}

/// Moves batches from `source` into `sender` until the source ends or fails, the consumer
/// goes away, or the call is cancelled. Returning drops `source`, which cancels the call.
async fn feed<S: BatchSource>(
    mut source: S,
    sender: mpsc::Sender<Message>,
    mut cancelled: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => return,
            next = source.next_batch() => next,
        };
        let message = match next {
            Ok(Some(batch)) => Message::Batch(batch, source.head()),
            Ok(None) => Message::End(source.head()),
            Err(error) => Message::Failed(error),
        };
        let last = !matches!(message, Message::Batch(..));
        tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => return,
            sent = sender.send(message) => if sent.is_err() { return },
        }
        if last {
            return;
        }
    }
}

/// The consuming side shared by [`ReadResponse`] and [`Subscription`].
struct Feed {
    receiver: mpsc::Receiver<Message>,
    cancel: CancelHandle,
    head: Option<Position>,
    buffered: VecDeque<SequencedEvent>,
    finished: bool,
    what: &'static str,
    // Keeps the feeding task's runtime alive even if the client is dropped first.
    _runtime: Arc<OwnedRuntime>,
}

impl Feed {
    fn spawn<S: BatchSource>(runtime: &Arc<OwnedRuntime>, source: S, what: &'static str) -> Self {
        let (sender, receiver) = mpsc::channel(PREFETCH_BATCHES);
        let cancel = CancelHandle::new();
        runtime
            .get()
            .spawn(feed(source, sender, cancel.cancelled.subscribe()));
        Feed {
            receiver,
            cancel,
            head: None,
            buffered: VecDeque::new(),
            finished: false,
            what,
            _runtime: Arc::clone(runtime),
        }
    }

    fn cancelled_error(&mut self) -> Error {
        self.finished = true;
        self.buffered.clear();
        Error::Cancelled(format!("the {} was cancelled", self.what))
    }

    fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        if self.finished {
            return Ok(None);
        }
        if self.cancel.is_cancelled() {
            return Err(self.cancelled_error());
        }
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        let message = self.receiver.blocking_recv();
        if self.cancel.is_cancelled() {
            return Err(self.cancelled_error());
        }
        match message {
            Some(Message::Batch(batch, head)) => {
                self.head = head.or(self.head);
                Ok(Some(batch))
            }
            Some(Message::End(head)) => {
                self.head = head.or(self.head);
                self.finished = true;
                Ok(None)
            }
            Some(Message::Failed(error)) => {
                self.finished = true;
                Err(error)
            }
            None => {
                self.finished = true;
                Err(Error::Internal(format!(
                    "the {} stopped without finishing: its client runtime shut down",
                    self.what
                )))
            }
        }
    }

    fn next_event(&mut self) -> Option<Result<SequencedEvent>> {
        if self.cancel.is_cancelled() && !self.finished {
            return Some(Err(self.cancelled_error()));
        }
        if let Some(event) = self.buffered.pop_front() {
            return Some(Ok(event));
        }
        match self.next_batch() {
            Ok(None) => None,
            Err(error) => Some(Err(error)),
            Ok(Some(batch)) => {
                self.buffered = batch.into();
                self.buffered.pop_front().map(Ok)
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Stops the feeding task even while it waits for new events.
        self.cancel.cancel();
    }
}

/// The response to a blocking [`read`](super::Client::read): an iterator of events, pulled
/// from the server in batches as it is consumed.
///
/// [`head`](Self::head) is the head reported by the latest batch received; once the iterator
/// is exhausted it is the read's head. After an error or a cancellation the iterator ends.
pub struct ReadResponse {
    feed: Feed,
}

impl ReadResponse {
    pub(crate) fn spawn(runtime: &Arc<OwnedRuntime>, response: crate::ReadResponse) -> Self {
        ReadResponse {
            feed: Feed::spawn(runtime, response, "read"),
        }
    }

    /// The next batch of events, or `None` when the read is complete.
    pub fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        self.feed.next_batch()
    }

    /// The head reported so far; after the last event, the read's head.
    pub fn head(&self) -> Option<Position> {
        self.feed.head
    }

    /// Every remaining event, and the read's head.
    pub fn collect_with_head(mut self) -> Result<(Vec<SequencedEvent>, Option<Position>)> {
        let mut events = Vec::new();
        while let Some(batch) = self.next_batch()? {
            events.extend(batch);
        }
        Ok((events, self.head()))
    }

    /// Cancels the read: the iterator ends with [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.feed.cancel.cancel();
    }

    /// A handle that cancels this read from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.feed.cancel.clone()
    }
}

impl Iterator for ReadResponse {
    type Item = Result<SequencedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.feed.next_event()
    }
}

/// A blocking [`subscription`](super::Client::subscribe): an iterator of events that waits for
/// new ones to be committed. It ends when the server shuts down, or with [`Error::Cancelled`]
/// after [`cancel`](Self::cancel).
pub struct Subscription {
    feed: Feed,
}

impl Subscription {
    pub(crate) fn spawn(runtime: &Arc<OwnedRuntime>, subscription: crate::Subscription) -> Self {
        Subscription {
            feed: Feed::spawn(runtime, subscription, "subscription"),
        }
    }

    /// The next batch of events, waiting for new ones; `None` when the server has ended the
    /// subscription.
    pub fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        self.feed.next_batch()
    }

    /// Cancels the subscription: the iterator ends with [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.feed.cancel.cancel();
    }

    /// A handle that cancels this subscription from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.feed.cancel.clone()
    }
}

impl Iterator for Subscription {
    type Item = Result<SequencedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.feed.next_event()
    }
}
