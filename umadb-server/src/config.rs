//! What a server is started with: where it listens, where the data lives, TLS, API keys, limits.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// PEM files for TLS. The certificate file may hold a chain (leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Everything [`crate::start`] needs.
///
/// ```
/// use umadb_server::ServerConfig;
/// let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "./uma.db");
/// config.api_keys.push("s3cret".into());
/// assert_eq!(config.limits.max_events_per_append, 100_000);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`crate::RunningServer::local_addr`]).
    pub listen: SocketAddr,
    /// Directory of the store; created if missing.
    pub db_path: PathBuf,
    /// Serve TLS instead of plain text.
    pub tls: Option<TlsConfig>,
    /// Accepted API keys (empty strings are ignored). None: no key is required. Several keys
    /// allow rotation.
    pub api_keys: Vec<String>,
    pub limits: Limits,
    /// Most events the store's indexes may trail its log by (see
    /// `umadb_core::StoreOptions::index_lag`).
    pub index_lag: u64,
}

impl ServerConfig {
    /// A plain-text server without API keys and with default limits.
    pub fn new(listen: SocketAddr, db_path: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen,
            db_path: db_path.into(),
            tls: None,
            api_keys: Vec::new(),
            limits: Limits::default(),
            index_lag: umadb_core::DEFAULT_INDEX_LAG,
        }
    }
}

// API keys never appear in logs or debug output.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("db_path", &self.db_path)
            .field("tls", &self.tls)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("limits", &self.limits)
            .field("index_lag", &self.index_lag)
            .finish()
    }
}

/// Limits that protect the server from oversized or abusive requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message the server decodes, in bytes.
    pub max_message_bytes: usize,
    /// Most events one append may carry.
    pub max_events_per_append: usize,
    /// Events per read or subscribe batch when the client asks for none (or 0).
    pub default_batch_size: u32,
    /// Largest batch size honoured; larger requests are capped to it.
    pub max_batch_size: u32,
    /// Largest response message the server sends, in bytes, unless a single event is larger.
    /// Existing clients decode at most 4 MiB per message.
    pub max_response_bytes: usize,
    /// How long shutdown waits for open calls to finish before dropping connections.
    pub shutdown_grace: Duration,
    /// Most client connections open at once; a connection beyond it is closed when accepted.
    pub max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection.
    pub max_streams_per_connection: u32,
    /// How long a unary call (Append, Head, GetTrackingInfo) may take; None: no limit. Streams
    /// are never cut by it.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            max_events_per_append: 100_000,
            default_batch_size: 1_000,
            max_batch_size: 10_000,
            max_response_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
            max_connections: 10_000,
            max_streams_per_connection: 10_000,
            request_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl Limits {
    /// The batch size to use for a client's request.
    pub(crate) fn batch_size(&self, requested: Option<u32>) -> usize {
        let size = match requested {
            None | Some(0) => self.default_batch_size,
            Some(n) => n.min(self.max_batch_size),
        };
        size.max(1) as usize
    }
}
