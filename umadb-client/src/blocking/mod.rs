//! A blocking client for code that is not async (the Python package wraps it).
//!
//! [`Client`] owns a small tokio runtime and runs the async client on it. It is `Send + Sync`:
//! share one between threads (for example in an `Arc`). Reads and subscriptions are iterators
//! fed through a bounded channel by a background task, so a long read is never held in memory
//! whole; they can be cancelled from any thread with a [`CancelHandle`].
//!
//! Do not call it from inside an async runtime: its methods block the calling thread.

mod iter;

use std::sync::Arc;

use tokio::runtime::Runtime;

pub use iter::{CancelHandle, ReadResponse, Subscription};

use crate::{AppendCondition, ClientBuilder, Error, Event, Position, Query, Result, TrackingInfo};

/// A blocking UmaDB client, with the same methods as the async [`crate::Client`].
///
/// ```no_run
/// use umadb_client::{blocking::Client, Event};
///
/// let client = Client::connect("http://127.0.0.1:50051")?;
/// let position = client.append(vec![Event::new("Pinged", ["ping"], vec![])], None, None)?;
/// let response = client.read(None, None, false, None)?;
/// for event in response {
///     println!("{}", event?.position);
/// }
/// assert!(client.head()? >= Some(position));
/// # Ok::<(), umadb_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<OwnedRuntime>,
}

/// The client's runtime. Dropping it never blocks (and so never panics inside async code):
/// its tasks only wait on the network.
pub(crate) struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    pub(crate) fn get(&self) -> &Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Options for a new client; finish with [`ClientBuilder::connect_blocking`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Connects with default options.
    pub fn connect(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).connect_blocking()
    }

    pub(crate) fn from_builder(builder: ClientBuilder) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("umadb-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the client's runtime: {e}")))?;
        let runtime = Arc::new(OwnedRuntime(Some(runtime)));
        let inner = runtime
            .get()
            .block_on(crate::Client::from_builder(builder))?;
        Ok(Client { inner, runtime })
    }

    /// The async client this one drives, for code that has both kinds.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::append`].
    pub fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
        tracking_info: Option<TrackingInfo>,
    ) -> Result<Position> {
        self.runtime
            .get()
            .block_on(self.inner.append(events, condition, tracking_info))
    }

    /// See [`crate::Client::read`]. The returned iterator yields events; its
    /// [`head`](ReadResponse::head) is the read's head once it is exhausted.
    pub fn read(
        &self,
        query: Option<Query>,
        start: Option<Position>,
        backwards: bool,
        limit: Option<u64>,
    ) -> Result<ReadResponse> {
        let response = self
            .runtime
            .get()
            .block_on(self.inner.read(query, start, backwards, limit))?;
        Ok(ReadResponse::spawn(&self.runtime, response))
    }

    /// See [`crate::Client::subscribe`]. The returned iterator blocks until new events are
    /// committed; stop it from another thread with [`Subscription::cancel_handle`].
    pub fn subscribe(&self, query: Option<Query>, after: Option<Position>) -> Result<Subscription> {
        let subscription = self
            .runtime
            .get()
            .block_on(self.inner.subscribe(query, after))?;
        Ok(Subscription::spawn(&self.runtime, subscription))
    }

    /// See [`crate::Client::head`].
    pub fn head(&self) -> Result<Option<Position>> {
        self.runtime.get().block_on(self.inner.head())
    }

    /// See [`crate::Client::get_tracking_info`].
    pub fn get_tracking_info(&self, source: &str) -> Result<Option<Position>> {
        self.runtime
            .get()
            .block_on(self.inner.get_tracking_info(source))
    }

    /// See [`crate::Client::check_health`].
    pub fn check_health(&self) -> Result<bool> {
        self.runtime.get().block_on(self.inner.check_health())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn blocking_types_can_be_shared_between_threads() {
        assert_send_sync::<Client>();
        assert_send_sync::<ReadResponse>();
        assert_send_sync::<Subscription>();
        assert_send_sync::<CancelHandle>();
    }
}
