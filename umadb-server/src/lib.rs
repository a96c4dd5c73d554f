//! The `umadb` gRPC server: the `umadb.v1` protocol over the UmaDB storage engine, with TLS
//! (rustls), API keys, the standard health service, and graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> Result<(), umadb_server::ServerError> {
//! use umadb_server::{start, ServerConfig};
//! let server = start(ServerConfig::new("127.0.0.1:0".parse().unwrap(), "./uma.db")).await?;
//! println!("serving on {}", server.local_addr());
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod closable;
mod config;
mod encoded;
mod fanout;
mod opening;
mod outbox;
mod readpool;
mod service;
mod streams;
mod wire_errors;

pub use config::{Limits, ServerConfig, TlsConfig};
pub use opening::opening_reporter;

use closable::Closable;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use umadb_core::{Store, StoreOptions};
use umadb_proto::coalesce::{Coalesce, Side};
use umadb_proto::v1::dcb_server::DcbServer;

/// The name under which the DCB service reports its health.
pub const SERVICE_NAME: &str = "umadb.v1.DCB";

/// Why a server could not start or stop cleanly.
#[derive(Debug)]
pub enum ServerError {
    /// The store could not be opened.
    Store(umadb_core::Error),
    /// The listen address could not be bound.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be read or used.
    Tls(String),
    /// The gRPC transport failed.
    Transport(String),
    /// The store was not closed cleanly at shutdown (nothing acknowledged is lost).
    Close(umadb_core::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Store(e) => write!(f, "cannot open the store: {e}"),
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Tls(m) => write!(f, "TLS: {m}"),
            ServerError::Transport(m) => write!(f, "gRPC transport: {m}"),
            ServerError::Close(e) => write!(
                f,
                "the store was not closed cleanly: {e}; every acknowledged append is in its log, \
                 which the next opening applies"
            ),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Store(e) => Some(e),
            ServerError::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A server that is accepting calls. Stop it with [`RunningServer::shutdown`]; dropping it
/// also stops accepting and ends streams, but does not wait.
pub struct RunningServer {
    local_addr: SocketAddr,
    store: Arc<Store>,
    health: HealthReporter,
    shutdown: watch::Sender<bool>,
    close_connections: watch::Sender<bool>,
    stop_accepting: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// The task that wakes subscriptions (see `fanout`).
    fanout: Option<JoinHandle<()>>,
    grace: Duration,
}

impl RunningServer {
    /// The address actually bound (the configured one may use port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops gracefully: health turns NOT_SERVING, new connections are refused, subscriptions
    /// end cleanly, reads in progress end with UNAVAILABLE, appends in flight are answered, then
    /// the store is closed. Calls still open after the grace period are dropped.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        tracing::info!("shutting down");
        for name in ["", SERVICE_NAME] {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        self.shutdown.send_replace(true);
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
        let mut outcome = Ok(());
        if let Some(mut serve) = self.serve.take() {
            match tokio::time::timeout(self.grace, &mut serve).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => outcome = Err(ServerError::Transport(e.to_string())),
                Ok(Err(e)) => outcome = Err(ServerError::Transport(e.to_string())),
                Err(_) => {
                    tracing::warn!(
                        grace = ?self.grace,
                        "calls still open after the grace period; closing their connections"
                    );
                    self.close_connections.send_replace(true);
                    if tokio::time::timeout(Duration::from_secs(5), &mut serve)
                        .await
                        .is_err()
                    {
                        serve.abort();
                    }
                }
            }
        }
        if let Some(fanout) = self.fanout.take() {
            // It holds the store: the store closes once it has stopped.
            let _ = fanout.await;
        }
        let store = self.store.clone();
        // Answers any append still queued, then stops the writer.
        let closed = tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap_or_else(|_| {
                Err(umadb_core::Error::Internal(
                    "closing the store stopped abnormally".into(),
                ))
            });
        if let Err(e) = closed {
            outcome = outcome.and(Err(ServerError::Close(e)));
        }
        tracing::info!("stopped");
        outcome
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(stop) = self.stop_accepting.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens the store, binds the listen address and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let tls = match &config.tls {
        Some(tls) => Some(load_tls(tls)?),
        None => None,
    };
    let db_path = config.db_path.clone();
    let opening = std::time::Instant::now();
    let shown_path = config.db_path.display().to_string();
    let options = StoreOptions {
        index_lag: config.index_lag,
        progress: Some(opening_reporter(move |line| {
            tracing::info!("{shown_path}: {line}")
        })),
        ..StoreOptions::default()
    };
    let store = tokio::task::spawn_blocking(move || Store::open_with(db_path, options))
        .await
        .map_err(|e| ServerError::Store(umadb_core::Error::Internal(e.to_string())))?
        .map_err(ServerError::Store)?;
    if !store.appends() {
        return Err(ServerError::Store(umadb_core::Error::Io(format!(
            "{}: another process is appending to this store (it holds the store's writer.lock): \
             is a second server running on it?",
            config.db_path.display()
        ))));
    }
    match store.page_summary() {
        Some(pages) if !pages.conclusive => tracing::warn!(
            "opened {}, but another process kept appending to it while its LMDB page structure \
             was walked, so the walk was not conclusive",
            config.db_path.display()
        ),
        Some(pages) if pages.pages == 0 => {
            tracing::info!("created a new store at {}", config.db_path.display())
        }
        Some(pages) => tracing::info!(
            "opened {} in {:.2?}: its LMDB page structure is sound ({} pages walked), head {}",
            config.db_path.display(),
            opening.elapsed(),
            pages.pages,
            store.head().unwrap_or(0)
        ),
        None => tracing::info!(
            "opened {}, head {}",
            config.db_path.display(),
            store.head().unwrap_or(0)
        ),
    }
    if let Some(version) = store.upgraded_from() {
        tracing::info!(
            "{}: upgraded the store from on-disk format version {version} to {}; builds \
             before this one cannot open it any more",
            config.db_path.display(),
            umadb_core::FORMAT_VERSION
        );
    }
    if let Some(replay) = store.journal_replay() {
        tracing::warn!(
            "{}: it was not closed cleanly; applied again the commits after its last \
             checkpoint from its log ({} records, {} append requests, {} events after position \
             {})",
            config.db_path.display(),
            replay.records,
            replay.requests,
            replay.events,
            replay.head_before
        );
    }
    let store = Arc::new(store);
    let (head_tx, head_rx) = watch::channel(store.head().unwrap_or(0));
    store.on_commit(move |head| {
        head_tx.send_replace(head);
    });
    let fanout = fanout::Fanout::new(store.clone());

    let incoming = TcpIncoming::bind(config.listen)
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let local_addr = incoming.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let (close_connections, close_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let max_connections = config.limits.max_connections;
    // Frames are coalesced where they are seen: below TLS they are not.
    let plain = tls.is_none();
    let incoming = incoming.filter_map(move |tcp| match tcp {
        Ok(tcp) => match connections.clone().try_acquire_owned() {
            Ok(permit) => Some(Ok(Closable::new(
                Coalesce::new(tcp, Side::Server, plain),
                close_rx.clone(),
                permit,
            ))),
            Err(_) => {
                // Dropping the socket closes it: the client sees the connection refused.
                tracing::warn!(
                    peer = ?tcp.peer_addr().ok(),
                    "connection limit ({max_connections}) reached; closing a new connection"
                );
                None
            }
        },
        Err(e) => Some(Err(e)),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let fanout_task = tokio::spawn(fanout.clone().run(head_rx, shutdown_rx.clone()));
    let limits = config.limits.clone();
    let service = Arc::new(service::DcbService::new(
        store.clone(),
        fanout,
        shutdown_rx,
        limits.clone(),
    ));
    let dcb =
        DcbServer::from_arc(service.clone()).max_decoding_message_size(limits.max_message_bytes);
    // Read is served with responses encoded where they are read (see `encoded`).
    let dcb = encoded::EncodedRoutes::new(dcb, service, limits.max_message_bytes);
    let dcb = wire_errors::WireErrors::new(dcb, limits.max_message_bytes, limits.request_timeout);
    // The key check runs first, before the request is even decoded.
    let dcb = InterceptedService::new(dcb, auth::ApiKeys::new(&config.api_keys));

    let mut builder = Server::builder()
        // Detect dead peers; clients' own keepalive pings are always answered.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(limits.max_streams_per_connection));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServerError::Tls(error_chain(&e)))?;
    }
    let router = builder.add_service(health_service).add_service(dcb);
    let (stop_accepting, stop_rx) = oneshot::channel::<()>();
    let serve = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop_rx.await;
    }));

    let data = std::fs::canonicalize(&config.db_path).unwrap_or_else(|_| config.db_path.clone());
    tracing::info!(
        "umadb {} listening on {local_addr} ({}, {}); data in {} (head {}, index lag {})",
        env!("CARGO_PKG_VERSION"),
        if config.tls.is_some() {
            "TLS"
        } else {
            "plain text, no TLS"
        },
        match config.api_keys.len() {
            0 => "no API key required".to_string(),
            1 => "API key required".to_string(),
            n => format!("{n} API keys accepted"),
        },
        data.display(),
        store.head().map_or("none".to_string(), |h| h.to_string()),
        store.index_lag(),
    );
    Ok(RunningServer {
        local_addr,
        store,
        health,
        shutdown,
        close_connections,
        stop_accepting: Some(stop_accepting),
        serve: Some(serve),
        fanout: Some(fanout_task),
        grace: limits.shutdown_grace,
    })
}

fn load_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, ServerError> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            ServerError::Tls(format!("cannot read the {what} {}: {e}", path.display()))
        })
    };
    let cert = read("certificate", &tls.cert_path)?;
    let key = read("private key", &tls.key_path)?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
