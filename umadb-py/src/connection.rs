//! The connection shared by `Client` and `AsyncClient`: client options checked when the client
//! is made, a connection opened on first use, and the streams to cancel on `close()`.
//!
//! Connecting lazily means making a client does no network I/O: a client can be made before
//! its server is up (or for a server that is not reachable from here), and the first call
//! reports a server that cannot be reached as `TransportError`. Everything that can be checked
//! without the network (URL scheme, CA file, API key, batch size) is checked at once.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use umadb_client::ClientBuilder;
use umadb_core::{AppendRequest, Error, Position, Query, Result};

use crate::feed::{Feed, Source};

enum State {
    Idle,
    Connected(Box<umadb_client::Client>),
    Closed,
}

pub(crate) struct Connection {
    builder: ClientBuilder,
    state: Mutex<State>,
    /// Held while connecting, so that concurrent first calls open one connection.
    connecting: tokio::sync::Mutex<()>,
    /// Reads and subscriptions opened by this client, cancelled by `close()`.
    feeds: Mutex<Vec<Weak<Feed>>>,
}

/// How a read is served: by a `Read` call, or (for `read(subscribe=True)`) a `Subscribe` call.
pub(crate) enum ReadKind {
    Read { backwards: bool },
    Subscribe,
}

impl Connection {
    /// Checks the options; connects on first use.
    pub(crate) fn new(
        url: &str,
        ca_path: Option<&str>,
        api_key: Option<&str>,
        batch_size: Option<u32>,
    ) -> Result<Arc<Connection>> {
        let (tls, _) = umadb_client::normalize_url(url)?;
        let mut builder = umadb_client::Client::builder(url);
        if let Some(ca_path) = ca_path {
            if !tls {
                return Err(Error::InvalidArgument(format!(
                    "ca_path {ca_path:?} was given for {url:?}, which is not a TLS URL: \
                     use https:// or grpcs://"
                )));
            }
            if let Err(e) = std::fs::metadata(Path::new(ca_path)) {
                return Err(Error::InvalidArgument(format!(
                    "cannot read the CA certificate file {ca_path:?}: {e}"
                )));
            }
            builder = builder.ca_path(ca_path);
        }
        if let Some(api_key) = api_key {
            if api_key.is_empty() || !api_key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Err(Error::InvalidArgument(
                    "the API key must be non-empty printable ASCII".to_string(),
                ));
            }
            builder = builder.api_key(api_key);
        }
        if let Some(batch_size) = batch_size {
            builder = builder.batch_size(batch_size);
        }
        Ok(Arc::new(Connection {
            builder,
            state: Mutex::new(State::Idle),
            connecting: tokio::sync::Mutex::new(()),
            feeds: Mutex::new(Vec::new()),
        }))
    }

    fn cached(&self) -> Result<Option<umadb_client::Client>> {
        match &*lock(&self.state) {
            State::Idle => Ok(None),
            State::Connected(client) => Ok(Some((**client).clone())),
            State::Closed => Err(Error::Transport("the client is closed".to_string())),
        }
    }

    /// The connected client, connecting now if this is the first call.
    async fn client(&self) -> Result<umadb_client::Client> {
        if let Some(client) = self.cached()? {
            return Ok(client);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(client) = self.cached()? {
            return Ok(client);
        }
        let client = self.builder.clone().connect().await?;
        let mut state = lock(&self.state);
        match *state {
            State::Closed => Err(Error::Transport("the client is closed".to_string())),
            _ => {
                *state = State::Connected(Box::new(client.clone()));
                Ok(client)
            }
        }
    }

    pub(crate) async fn append(&self, request: AppendRequest) -> Result<Position> {
        self.client()
            .await?
            .append(request.events, request.condition, request.tracking_info)
            .await
    }

    pub(crate) async fn read(
        &self,
        query: Option<Query>,
        start: Option<Position>,
        kind: ReadKind,
        limit: Option<u64>,
    ) -> Result<Arc<Feed>> {
        let client = self.client().await?;
        let feed = match kind {
            ReadKind::Read { backwards } => {
                let response = client.read(query, start, backwards, limit).await?;
                Feed::new(Source::Read(response), "read", None)
            }
            ReadKind::Subscribe => {
                // `start` is inclusive, `after` exclusive.
                let after = start.and_then(|s| s.checked_sub(1));
                let subscription = client.subscribe(query, after).await?;
                Feed::new(Source::Subscription(subscription), "read", limit)
            }
        };
        self.register(&feed)?;
        Ok(feed)
    }

    pub(crate) async fn subscribe(
        &self,
        query: Option<Query>,
        after: Option<Position>,
    ) -> Result<Arc<Feed>> {
        let subscription = self.client().await?.subscribe(query, after).await?;
        let feed = Feed::new(Source::Subscription(subscription), "subscription", None);
        self.register(&feed)?;
        Ok(feed)
    }

    pub(crate) async fn head(&self) -> Result<Option<Position>> {
        self.client().await?.head().await
    }

    pub(crate) async fn get_tracking_info(&self, source: String) -> Result<Option<Position>> {
        self.client().await?.get_tracking_info(&source).await
    }

    pub(crate) async fn check_health(&self) -> Result<bool> {
        self.client().await?.check_health().await
    }

    fn register(&self, feed: &Arc<Feed>) -> Result<()> {
        // Checked under the feeds lock, so that a concurrent close() either refuses this feed
        // or finds it in the list.
        let mut feeds = lock(&self.feeds);
        if self.is_closed() {
            feed.cancel();
            return Err(Error::Transport("the client is closed".to_string()));
        }
        feeds.retain(|f| f.strong_count() > 0);
        feeds.push(Arc::downgrade(feed));
        Ok(())
    }

    /// Cancels the reads and subscriptions of this client and drops its connection. Later
    /// calls raise `TransportError`. Closing twice does nothing.
    pub(crate) fn close(&self) {
        *lock(&self.state) = State::Closed;
        let feeds = std::mem::take(&mut *lock(&self.feeds));
        for feed in feeds.iter().filter_map(Weak::upgrade) {
            feed.cancel();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(*lock(&self.state), State::Closed)
    }
}

/// Locks a mutex that no panic can poison in a harmful way (every critical section here is a
/// plain assignment or push).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
