//! Rust client for UmaDB, an event store for Dynamic Consistency Boundaries.
//!
//! - [`Client`]: the async client (tokio). Clone it freely; clones share one connection.
//! - [`blocking::Client`]: the same methods for code that is not async. It owns its runtime,
//!   is `Send + Sync`, and its reads and subscriptions are iterators that can be cancelled
//!   from another thread.
//!
//! The domain types and the error enum are those of `umadb-core`, re-exported here: one
//! definition shared by the server, the clients and the Python package.
//!
//! # Connecting
//!
//! `http://host:port` connects in plain text, `https://host:port` over TLS verified against
//! the system's root certificates, or against a given CA file with
//! [`ClientBuilder::ca_path`]. An API key is sent as `authorization: Bearer <key>` with every
//! call. A call made after the connection broke (for example after a server restart)
//! reconnects; transient failures of calls that are safe to repeat are retried with backoff
//! (see [`RetryPolicy`]).
//!
//! # A read-decide-append flow
//!
//! ```no_run
//! use umadb_client::{AppendCondition, Client, Error, Event, Query, QueryItem, Uuid};
//!
//! # async fn demo() -> umadb_client::Result<()> {
//! let client = Client::builder("http://127.0.0.1:50051").api_key("secret").connect().await?;
//!
//! // The consistency boundary: everything that decides whether student s1 may join c1.
//! let boundary = Query::from_items([
//!     QueryItem::new(["StudentJoinedCourse"], ["student:s1", "course:c1"]),
//! ]);
//! let (events, head) = client
//!     .read(Some(boundary.clone()), None, false, None)
//!     .await?
//!     .collect_with_head()
//!     .await?;
//! if events.is_empty() {
//!     let joined = Event::new("StudentJoinedCourse", ["student:s1", "course:c1"], b"{}".to_vec())
//!         .with_uuid(Uuid::new_v4());
//!     let condition = AppendCondition { fail_if_events_match: boundary, after: head };
//!     match client.append(vec![joined], Some(condition), None).await {
//!         Ok(position) => println!("joined at {position}"),
//!         Err(Error::Integrity(_)) => println!("someone else decided first: read again"),
//!         Err(other) => return Err(other),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every method returns [`Error`]: [`Error::Integrity`] for a failed append condition or
//! tracking position, [`Error::InvalidArgument`], [`Error::Authentication`],
//! [`Error::Corruption`] and [`Error::Internal`] as reported by the server (decoded from the
//! `ErrorResponse` in the status details), [`Error::Transport`] when the server cannot be
//! reached or the connection broke, and [`Error::Cancelled`] after a blocking read or
//! subscription was cancelled.

mod auth;
pub mod blocking;
mod client;
mod connector;
mod options;
mod retry;
mod stream;

pub use client::Client;
pub use options::{normalize_url, ClientBuilder, RetryPolicy, DEFAULT_CONNECT_TIMEOUT};
pub use stream::{ReadResponse, Subscription};
pub use umadb_core::{
    AppendCondition, AppendRequest, Error, Event, Position, Query, QueryItem, Result,
    SequencedEvent, TrackingInfo, Uuid,
};
