//! The async streams of a read and of a subscription.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tonic::Streaming;
use umadb_proto::v1;

use crate::retry::error_from_status;
use crate::{Error, Position, Result, SequencedEvent};

/// A streamed response message: a batch of events, and for reads the head it reports.
pub(crate) trait Batch {
    fn into_parts(self) -> (Vec<v1::SequencedEvent>, Option<Position>);
}

impl Batch for v1::ReadResponse {
    fn into_parts(self) -> (Vec<v1::SequencedEvent>, Option<Position>) {
        (self.events, self.head)
    }
}

impl Batch for v1::SubscribeResponse {
    fn into_parts(self) -> (Vec<v1::SequencedEvent>, Option<Position>) {
        (self.events, None)
    }
}

/// Batches decoded lazily from a gRPC stream, with events of a batch handed out one by one
/// when used as a [`Stream`].
struct Batches<M> {
    stream: Streaming<M>,
    head: Option<Position>,
    buffered: VecDeque<SequencedEvent>,
    finished: bool,
}

impl<M: Batch> Batches<M> {
    fn new(stream: Streaming<M>) -> Self {
        Batches {
            stream,
            head: None,
            buffered: VecDeque::new(),
            finished: false,
        }
    }

    /// The next non-empty batch; `None` once the stream has ended or failed.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<SequencedEvent>>>> {
        if !self.buffered.is_empty() {
            return Poll::Ready(Ok(Some(self.buffered.drain(..).collect())));
        }
        loop {
            if self.finished {
                return Poll::Ready(Ok(None));
            }
            let message = match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Some(Err(status))) => {
                    self.finished = true;
                    return Poll::Ready(Err(error_from_status(&status)));
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            let (events, head) = message.into_parts();
            if head.is_some() {
                self.head = head;
            }
            let decoded: Result<Vec<SequencedEvent>> =
                events.into_iter().map(SequencedEvent::try_from).collect();
            match decoded {
                Err(error) => {
                    self.finished = true;
                    return Poll::Ready(Err(received_invalid(error)));
                }
                Ok(events) if events.is_empty() => continue,
                Ok(events) => return Poll::Ready(Ok(Some(events))),
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<SequencedEvent>>> {
        if let Some(event) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        match self.poll_batch(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Ok(Some(batch))) => {
                self.buffered = batch.into();
                Poll::Ready(self.buffered.pop_front().map(Ok))
            }
        }
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }
}

/// An event the server sent that does not decode is the server's fault, not the caller's.
fn received_invalid(error: Error) -> Error {
    Error::Serialization(format!(
        "the server sent an event that cannot be decoded: {}",
        error.message()
    ))
}

/// The response to [`Client::read`](crate::Client::read): events streamed lazily in batches,
/// and the read's head.
///
/// Use it as a [`Stream`] of events, or pull whole batches with [`next_batch`](Self::next_batch).
/// [`head`](Self::head) is the head reported by the latest response message received; once the
/// stream has ended it is the read's head (see DESIGN.md: the store's head when the read began,
/// or with a limit the position of the last event returned). Dropping the response cancels the
/// read on the server.
///
/// ```no_run
/// # async fn demo(client: umadb_client::Client) -> umadb_client::Result<()> {
/// let query = umadb_client::Query::from_items([umadb_client::QueryItem::new(["T"], ["t1"])]);
/// let response = client.read(Some(query), None, false, None).await?;
/// let (events, head) = response.collect_with_head().await?;
/// # let _ = (events, head); Ok(()) }
/// ```
pub struct ReadResponse {
    batches: Batches<v1::ReadResponse>,
}

impl ReadResponse {
    pub(crate) fn new(stream: Streaming<v1::ReadResponse>) -> Self {
        ReadResponse {
            batches: Batches::new(stream),
        }
    }

    /// The head reported so far; after the stream has ended, the read's head.
    pub fn head(&self) -> Option<Position> {
        self.batches.head
    }

    /// The next batch of events, or `None` when the read is complete.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        self.batches.next_batch().await
    }

    /// Every remaining event, and the read's head.
    pub async fn collect_with_head(mut self) -> Result<(Vec<SequencedEvent>, Option<Position>)> {
        let mut events = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            events.extend(batch);
        }
        Ok((events, self.head()))
    }
}

impl Stream for ReadResponse {
    type Item = Result<SequencedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().batches.poll_event(cx)
    }
}

/// The stream returned by [`Client::subscribe`](crate::Client::subscribe): matching events
/// after the given position, recorded ones first, then new ones as they are committed. It ends
/// when the server shuts down; subscribe again after the last position seen to continue.
/// Dropping it cancels the subscription on the server.
///
/// ```no_run
/// # async fn demo(client: umadb_client::Client) -> umadb_client::Result<()> {
/// let mut subscription = client.subscribe(None, Some(41)).await?;
/// while let Some(batch) = subscription.next_batch().await? {
///     for event in batch {
///         println!("{}: {}", event.position, event.event.event_type);
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    batches: Batches<v1::SubscribeResponse>,
}

impl Subscription {
    pub(crate) fn new(stream: Streaming<v1::SubscribeResponse>) -> Self {
        Subscription {
            batches: Batches::new(stream),
        }
    }

    /// The next batch of events, waiting for new events to be committed; `None` when the
    /// server has ended the subscription.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<SequencedEvent>>> {
        self.batches.next_batch().await
    }
}

impl Stream for Subscription {
    type Item = Result<SequencedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().batches.poll_event(cx)
    }
}

/// What the blocking iterators pull from: one batch at a time.
pub(crate) trait BatchSource: Send + 'static {
    fn next_batch(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<SequencedEvent>>>> + Send;
    fn head(&self) -> Option<Position>;
}

impl BatchSource for ReadResponse {
    fn next_batch(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<SequencedEvent>>>> + Send {
        ReadResponse::next_batch(self)
    }

    fn head(&self) -> Option<Position> {
        ReadResponse::head(self)
    }
}

impl BatchSource for Subscription {
    fn next_batch(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<SequencedEvent>>>> + Send {
        Subscription::next_batch(self)
    }

    fn head(&self) -> Option<Position> {
        None
    }
}
