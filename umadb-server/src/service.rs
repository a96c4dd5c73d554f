//! The `umadb.v1.DCB` service. Handlers convert wire types, call the store, convert back; every
//! DCB rule lives in `umadb-core`.

use crate::config::Limits;
use crate::encoded::{EncodedResponse, HeadField};
use crate::fanout::Fanout;
use crate::outbox::{self, Outbox};
use crate::streams::{self, Paging, ReadStream};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};
use umadb_core::{Error, Position, Query, Store};
use umadb_proto::v1::dcb_server::Dcb;
use umadb_proto::{status_from_error, v1};

pub(crate) struct DcbService {
    store: Arc<Store>,
    /// Wakes subscriptions on the commits that concern them.
    fanout: Arc<Fanout>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
}

impl DcbService {
    pub fn new(
        store: Arc<Store>,
        fanout: Arc<Fanout>,
        shutdown: watch::Receiver<bool>,
        limits: Limits,
    ) -> Self {
        DcbService {
            store,
            fanout,
            shutdown,
            limits,
        }
    }

    fn paging(&self, batch_size: Option<u32>) -> Paging {
        Paging {
            batch_size: self.limits.batch_size(batch_size),
            max_message_bytes: self.limits.max_response_bytes,
        }
    }

    /// A subscription's stream; each message's head is `head` (none for `Subscribe`).
    fn subscription(
        &self,
        query: Query,
        after: Position,
        limit: Option<u64>,
        batch_size: Option<u32>,
        head: HeadField,
    ) -> Result<Outbox<EncodedResponse>, Status> {
        query.validate().map_err(|e| status_from_error(&e))?;
        let query = Arc::new(query);
        let subscription = streams::Subscription {
            store: self.store.clone(),
            follow: self.fanout.follow(query.clone()),
            query,
            after,
            limit,
            paging: self.paging(batch_size),
        };
        Ok(outbox::spawn(self.shutdown.clone(), move |out| {
            streams::subscribe(subscription, out, head)
        }))
    }

    /// `Subscribe`, served through `encoded::EncodedRoutes`.
    pub fn subscribe_encoded(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Outbox<EncodedResponse>>, Status> {
        let request = request.into_inner();
        let query: Query = request.query.map(Into::into).unwrap_or_default();
        let after = request.after.unwrap_or(0);
        tracing::debug!(?query, after, "subscribe");
        let stream = self.subscription(
            query,
            after,
            None,
            request.batch_size,
            HeadField::Fixed(None),
        )?;
        Ok(Response::new(stream))
    }

    /// `Read`, served through `encoded::EncodedRoutes`: the responses are encoded where they
    /// are produced.
    pub fn read_encoded(
        &self,
        request: Request<v1::ReadRequest>,
    ) -> Result<Response<Outbox<EncodedResponse>>, Status> {
        let request = request.into_inner();
        let query: Query = request.query.map(Into::into).unwrap_or_default();
        let backwards = request.backwards.unwrap_or(false);
        let limit = request.limit.map(u64::from);
        tracing::debug!(?query, start = ?request.start, backwards, ?limit, subscribe = ?request.subscribe, "read");
        if request.subscribe.unwrap_or(false) {
            if backwards {
                return Err(invalid(
                    "a read cannot both subscribe and go backwards; subscriptions follow new events forwards"
                        .into(),
                ));
            }
            // `start` is inclusive; a subscription starts after a position.
            let after = request.start.unwrap_or(0).saturating_sub(1);
            let stream = self.subscription(
                query,
                after,
                limit,
                request.batch_size,
                HeadField::LastEvent,
            )?;
            return Ok(Response::new(stream));
        }
        let read = umadb_core::ReadRequest {
            query,
            start: request.start,
            backwards,
            limit,
        };
        let reader = self.store.read(read).map_err(|e| status_from_error(&e))?;
        let paging = self.paging(request.batch_size);
        let mut stream = ReadStream::new(self.store.clone(), reader, limit.is_some(), paging);
        let first = stream.first()?;
        if stream.is_complete() {
            // The whole answer is in hand: it leaves with the response headers, no task needed.
            let messages = first.into_iter().map(|(message, _)| message);
            return Ok(Response::new(Outbox::complete(messages.collect())));
        }
        Ok(Response::new(outbox::spawn(
            self.shutdown.clone(),
            move |out| stream.run(first, out),
        )))
    }
}

fn not_routed(rpc: &str) -> Status {
    status_from_error(&Error::Internal(format!(
        "{rpc} reached the generated service; it is served by the encoded routes"
    )))
}

fn invalid(message: String) -> Status {
    status_from_error(&Error::InvalidArgument(message))
}

#[tonic::async_trait]
impl Dcb for DcbService {
    type ReadStream = Outbox<v1::ReadResponse>;
    type SubscribeStream = Outbox<v1::SubscribeResponse>;

    /// Never called: `encoded::EncodedRoutes` serves every `Read` before it reaches the
    /// generated service (see `DcbService::read_encoded`). The generated trait requires it.
    async fn read(
        &self,
        _request: Request<v1::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        Err(not_routed("Read"))
    }

    /// Never called, as `read`: see `DcbService::subscribe_encoded`.
    async fn subscribe(
        &self,
        _request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(not_routed("Subscribe"))
    }

    async fn append(
        &self,
        request: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        let request = request.into_inner();
        let count = request.events.len();
        if count > self.limits.max_events_per_append {
            return Err(invalid(format!(
                "the append carries {count} events; this server accepts at most {} per append \
                 (split it into several appends, or raise the server's limit)",
                self.limits.max_events_per_append
            )));
        }
        let request: umadb_core::AppendRequest =
            request.try_into().map_err(|e| status_from_error(&e))?;
        let (reply, answer) = oneshot::channel();
        self.store
            .submit_append(
                request,
                Box::new(move |result| {
                    let _ = reply.send(result);
                }),
            )
            .map_err(|e| {
                // Submitting fails only once the store has closed, during shutdown.
                tracing::debug!(error = %e, "append refused");
                status_from_error(&Error::Transport(
                    "the server is shutting down and no longer accepts appends".into(),
                ))
            })?;
        let result = answer.await.unwrap_or_else(|_| {
            Err(Error::Internal(
                "the writer stopped before answering the append".into(),
            ))
        });
        match result {
            Ok(position) => {
                tracing::trace!(count, position, "append");
                Ok(Response::new(v1::AppendResponse { position }))
            }
            Err(e) => {
                let e = explain_disk_full(&self.store, e);
                log_failure(&self.store, &e);
                Err(status_from_error(&e))
            }
        }
    }

    async fn head(
        &self,
        _request: Request<v1::HeadRequest>,
    ) -> Result<Response<v1::HeadResponse>, Status> {
        Ok(Response::new(v1::HeadResponse {
            position: self.store.head(),
        }))
    }

    async fn get_tracking_info(
        &self,
        request: Request<v1::TrackingRequest>,
    ) -> Result<Response<v1::TrackingResponse>, Status> {
        let source = request.into_inner().source;
        let store = self.store.clone();
        let position = tokio::task::spawn_blocking(move || store.tracking_position(&source))
            .await
            .map_err(|e| {
                status_from_error(&Error::Internal(format!(
                    "a storage task failed unexpectedly: {e}"
                )))
            })?
            .map_err(|e| {
                log_failure(&self.store, &e);
                status_from_error(&e)
            })?;
        Ok(Response::new(v1::TrackingResponse { position }))
    }
}

/// Failures of the server or the disk are logged; the client's own mistakes are not.
pub(crate) fn log_failure(store: &Store, e: &Error) {
    match e {
        Error::Corruption(_) | Error::Io(_) | Error::Internal(_) => {
            tracing::error!(store = %store.path().display(), error = %e, "request failed")
        }
        _ => tracing::debug!(error = %e, "request refused"),
    }
}

/// Below this much free space on the store's filesystem, a failed write is put down to a full disk.
const LOW_DISK_SPACE: u64 = 64 * 1024 * 1024;

/// LMDB reports a write cut short by a full disk as a plain I/O error (EIO); say what it is.
fn explain_disk_full(store: &Store, e: Error) -> Error {
    let Error::Io(message) = &e else { return e };
    match free_space(store.path()) {
        Some(free) if free < LOW_DISK_SPACE => Error::Io(format!(
            "the disk holding the store is full ({free} bytes free on the filesystem of {}); \
             nothing of this append was written: free space and retry ({message})",
            store.path().display()
        )),
        _ => e,
    }
}

/// Bytes available to this process on the filesystem holding `path`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a zeroed struct we own; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
