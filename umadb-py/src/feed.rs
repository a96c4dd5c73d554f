//! The events of one read or subscription, pulled from the server a batch at a time.
//!
//! A `Feed` is shared by the Python object that iterates it and by its client (which cancels
//! it on `close()`). Only the current batch is held in memory, so a read of a million events
//! never loads them all. `cancel()` works from any thread and wakes a caller waiting for
//! events; from then on every call fails with `Error::Cancelled`.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use umadb_core::{Error, Position, Result, SequencedEvent};

pub(crate) enum Source {
    Read(umadb_client::ReadResponse),
    Subscription(umadb_client::Subscription),
}

impl Source {
    async fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        match self {
            Source::Read(read) => read.next_batch().await,
            Source::Subscription(subscription) => subscription.next_batch().await,
        }
    }

    fn reported_head(&self) -> Option<Position> {
        match self {
            Source::Read(read) => read.head(),
            Source::Subscription(_) => None,
        }
    }

    fn ends_by_itself(&self) -> bool {
        matches!(self, Source::Read(_))
    }
}

struct State {
    /// `None` once the stream has ended, failed or been cancelled (dropping it cancels the
    /// call on the server).
    source: Option<Source>,
    /// Received and not yet handed out.
    buffered: VecDeque<SequencedEvent>,
    /// A read: the head its server reported. A subscription: the last position received.
    head: Option<Position>,
    /// Events still to hand out, for `read(subscribe=True, limit=n)`.
    remaining: Option<u64>,
    /// Whether the source is a read (which ends) rather than a subscription (which waits).
    finite: bool,
}

pub(crate) struct Feed {
    state: Mutex<State>,
    cancelled: watch::Sender<bool>,
    what: &'static str,
}

impl Feed {
    pub(crate) fn new(source: Source, what: &'static str, limit: Option<u64>) -> Arc<Feed> {
        let finished = limit == Some(0);
        Arc::new(Feed {
            state: Mutex::new(State {
                finite: source.ends_by_itself(),
                source: if finished { None } else { Some(source) },
                buffered: VecDeque::new(),
                head: None,
                remaining: limit,
            }),
            cancelled: watch::Sender::new(false),
            what,
        })
    }

    fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    fn cancelled_error(&self) -> Error {
        Error::Cancelled(format!("the {} was cancelled", self.what))
    }

    /// Stops the feed: a caller waiting for events wakes up with `Error::Cancelled`, and so
    /// does every later call. The call on the server is cancelled.
    pub(crate) fn cancel(&self) {
        self.cancelled.send_replace(true);
        if let Ok(mut state) = self.state.try_lock() {
            state.source = None;
            state.buffered.clear();
        }
    }

    /// Receives the next batch into the buffer (`Ok(false)` when there is none: the stream has
    /// ended). Waits for new events in a subscription; wakes up when cancelled.
    async fn receive(&self, state: &mut State) -> Result<bool> {
        let Some(source) = state.source.as_mut() else {
            return Ok(false);
        };
        let mut cancelled = self.cancelled.subscribe();
        let next = tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => None,
            next = source.next_batch() => Some(next),
        };
        let reported = source.reported_head();
        let Some(next) = next else {
            state.source = None;
            state.buffered.clear();
            return Err(self.cancelled_error());
        };
        if reported.is_some() {
            state.head = reported;
        }
        match next {
            Ok(Some(mut batch)) => {
                if let Some(remaining) = state.remaining.as_mut() {
                    let keep = usize::try_from(*remaining).unwrap_or(usize::MAX);
                    batch.truncate(keep);
                    *remaining -= batch.len() as u64;
                    if *remaining == 0 {
                        state.source = None;
                    }
                }
                if !state.finite {
                    if let Some(last) = batch.last() {
                        state.head = Some(last.position);
                    }
                }
                state.buffered.extend(batch);
                Ok(true)
            }
            Ok(None) => {
                state.source = None;
                Ok(false)
            }
            Err(error) => {
                state.source = None;
                Err(error)
            }
        }
    }

    fn check(&self, state: &mut State) -> Result<()> {
        if self.is_cancelled() {
            state.source = None;
            state.buffered.clear();
            return Err(self.cancelled_error());
        }
        Ok(())
    }

    /// The next event without waiting, when one is at hand: `None` when it must be received.
    pub(crate) fn try_next_event(&self) -> Option<Result<Option<SequencedEvent>>> {
        let mut state = self.state.try_lock().ok()?;
        if let Err(error) = self.check(&mut state) {
            return Some(Err(error));
        }
        match state.buffered.pop_front() {
            Some(event) => Some(Ok(Some(event))),
            None if state.source.is_none() => Some(Ok(None)),
            None => None,
        }
    }

    /// The next event; `None` when the stream has ended.
    pub(crate) async fn next_event(&self) -> Result<Option<SequencedEvent>> {
        let mut state = self.state.lock().await;
        loop {
            self.check(&mut state)?;
            if let Some(event) = state.buffered.pop_front() {
                return Ok(Some(event));
            }
            if !self.receive(&mut state).await? {
                return Ok(None);
            }
        }
    }

    /// The events received and not yet handed out, or else the next batch; empty when the
    /// stream has ended.
    pub(crate) async fn next_batch(&self) -> Result<Vec<SequencedEvent>> {
        let mut state = self.state.lock().await;
        self.check(&mut state)?;
        if state.buffered.is_empty() {
            self.receive(&mut state).await?;
        }
        Ok(state.buffered.drain(..).collect())
    }

    /// The head without waiting, when it is known: a read that has ended, or a subscription.
    pub(crate) fn try_head(&self) -> Option<Result<Option<Position>>> {
        let mut state = self.state.try_lock().ok()?;
        if let Err(error) = self.check(&mut state) {
            return Some(Err(error));
        }
        (state.source.is_none() || !state.finite).then_some(Ok(state.head))
    }

    /// A read's head (see DESIGN.md: the store's head when the read began, or with a limit the
    /// position of the last event returned). Known only once the server has sent everything,
    /// so a read not yet consumed is received to its end first, its events kept for iteration.
    /// A subscription: the position of the last event received so far.
    pub(crate) async fn head(&self) -> Result<Option<Position>> {
        let mut state = self.state.lock().await;
        self.check(&mut state)?;
        if state.finite {
            while self.receive(&mut state).await? {}
        }
        Ok(state.head)
    }

    /// Every remaining event of a read, and its head.
    pub(crate) async fn collect_with_head(
        &self,
    ) -> Result<(Vec<SequencedEvent>, Option<Position>)> {
        let mut state = self.state.lock().await;
        self.check(&mut state)?;
        while self.receive(&mut state).await? {}
        Ok((state.buffered.drain(..).collect(), state.head))
    }
}
