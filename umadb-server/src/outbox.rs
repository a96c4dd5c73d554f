//! The response side of a streaming call: a small bounded queue filled by a task, and the
//! choice of how many events to read per batch (`encoded::encode_batch` cuts a batch into
//! messages that stay under the clients' 4 MiB decode limit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::Status;

/// Messages buffered per stream. A stalled client parks its producer task once this is full,
/// so its memory stays bounded (about this many response messages, plus the one in the
/// transport) and no one else waits for it.
const QUEUE_DEPTH: usize = 2;

/// Where a producer task puts messages. Created by [`spawn`].
pub(crate) struct Sender<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    shutdown: watch::Receiver<bool>,
}

/// Why a producer should stop.
pub(crate) enum Stop {
    /// The client cancelled or went away.
    ClientGone,
    /// The server is shutting down.
    Shutdown,
}

impl<T> Sender<T> {
    /// Queues a message, waiting for room; stops early if the client leaves or the server shuts
    /// down meanwhile.
    pub async fn send(&mut self, message: T) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|down| *down) => Err(Stop::Shutdown),
            sent = self.tx.send(Ok(message)) => sent.map_err(|_| Stop::ClientGone),
        }
    }

    /// Waits until `wake` completes, the client leaves or the server shuts down.
    pub async fn wait<F: Future>(&mut self, wake: F) -> Result<F::Output, Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|down| *down) => Err(Stop::Shutdown),
            _ = self.tx.closed() => Err(Stop::ClientGone),
            output = wake => Ok(output),
        }
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Runs `produce` on its own task and returns the stream of what it sends. When `produce`
/// returns an error status, the stream ends with it (even if the queue was full when it
/// failed); when it returns `Ok`, the stream ends cleanly.
pub(crate) fn spawn<T, F, Fut>(shutdown: watch::Receiver<bool>, produce: F) -> Outbox<T>
where
    T: Send + 'static,
    F: FnOnce(Sender<T>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (end_tx, end_rx) = oneshot::channel();
    let task = produce(Sender { tx, shutdown });
    tokio::spawn(async move {
        // `task` owns the sender: the queue closes when it returns, then the end is known.
        if let Err(status) = task.await {
            let _ = end_tx.send(status);
        }
    });
    Outbox {
        complete: Vec::new().into_iter(),
        rx: Some(rx),
        end: Some(end_rx),
    }
}

/// The stream handed to tonic: every queued message, then the final status if there is one.
pub(crate) struct Outbox<T> {
    /// Messages known in full when the call was answered.
    complete: std::vec::IntoIter<T>,
    /// The producer's queue; none when `complete` is the whole stream.
    rx: Option<mpsc::Receiver<Result<T, Status>>>,
    end: Option<oneshot::Receiver<Status>>,
}

impl<T> Outbox<T> {
    /// A stream of exactly these messages, ending cleanly. The transport finds them ready with
    /// the response headers, so a short answer leaves in one write instead of several.
    pub fn complete(messages: Vec<T>) -> Self {
        Outbox {
            complete: messages.into_iter(),
            rx: None,
            end: None,
        }
    }
}

// Nothing in an Outbox is pinned: messages are moved out of it, never polled in place.
impl<T> Unpin for Outbox<T> {}

impl<T> Stream for Outbox<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(message) = self.complete.next() {
            return Poll::Ready(Some(Ok(message)));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                let Some(end) = self.end.as_mut() else {
                    return Poll::Ready(None);
                };
                match Pin::new(end).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(result) => {
                        self.end = None;
                        Poll::Ready(result.ok().map(Err))
                    }
                }
            }
        }
    }
}

/// Chooses how many events to fetch per batch so a batch of large events holds about
/// `target_bytes`, while small events come `max` at a time. Sizes are unknown before the first
/// batch, so batches start small and double until they reach `max`.
pub(crate) struct BatchSizer {
    max: usize,
    target_bytes: usize,
    /// Largest event of the last batch, once one was read.
    largest: Option<usize>,
    ramp: usize,
}

/// Events in the first batch of a read or subscription.
const FIRST_BATCH: usize = 16;

impl BatchSizer {
    pub fn new(max: usize, target_bytes: usize) -> Self {
        BatchSizer {
            max: max.max(1),
            target_bytes,
            largest: None,
            ramp: FIRST_BATCH,
        }
    }

    pub fn next(&self) -> usize {
        let by_size = self
            .largest
            .map_or(usize::MAX, |largest| self.target_bytes / largest.max(1));
        by_size.min(self.ramp).clamp(1, self.max)
    }

    /// Learns from a batch: the bytes its largest event took in its message, if it had any.
    pub fn observe_largest(&mut self, largest: Option<usize>) {
        if let Some(largest) = largest {
            self.largest = Some(largest);
        }
        self.ramp = self.ramp.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_complete_outbox_yields_its_messages_then_ends_cleanly() {
        let mut outbox = Outbox::complete(vec![1, 2]);
        let mut seen = Vec::new();
        while let Some(item) = outbox.next().await {
            seen.push(item.expect("no error status"));
        }
        assert_eq!(seen, vec![1, 2]);
        assert!(outbox.next().await.is_none(), "it stays ended");
    }

    #[tokio::test]
    async fn a_spawned_outbox_ends_with_the_producers_error() {
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let mut outbox = spawn(shutdown, |mut out: Sender<u32>| async move {
            out.send(7).await.map_err(|_| Status::cancelled("gone"))?;
            Err(Status::data_loss("damaged"))
        });
        assert_eq!(outbox.next().await.map(|r| r.ok()), Some(Some(7)));
        let end = outbox.next().await.expect("an end status");
        assert_eq!(end.expect_err("an error").code(), tonic::Code::DataLoss);
        assert!(outbox.next().await.is_none());
    }

    #[test]
    fn batch_size_grows_to_the_maximum_for_small_events() {
        let mut sizer = BatchSizer::new(1000, 1_000_000);
        assert_eq!(sizer.next(), FIRST_BATCH);
        let mut sizes = Vec::new();
        for _ in 0..8 {
            sizer.observe_largest(Some(110));
            sizes.push(sizer.next());
        }
        assert_eq!(sizes, vec![32, 64, 128, 256, 512, 1000, 1000, 1000]);
        assert_eq!(BatchSizer::new(3, 1_000_000).next(), 3);
    }

    #[test]
    fn batch_size_shrinks_for_large_events_and_never_reaches_zero() {
        let mut sizer = BatchSizer::new(1000, 1_000_000);
        for _ in 0..10 {
            sizer.observe_largest(Some(110));
        }
        assert_eq!(sizer.next(), 1000);
        sizer.observe_largest(Some(100_010));
        assert!(sizer.next() < 20);
        sizer.observe_largest(Some(5_000_010));
        assert_eq!(sizer.next(), 1);
        // A batch without events teaches nothing about sizes.
        sizer.observe_largest(None);
        assert_eq!(sizer.next(), 1);
    }
}
