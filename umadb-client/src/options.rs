//! How a client connects: URL, TLS, API key, batch size, timeouts and retries.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::{Error, Result};

/// Default time allowed to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message the client decodes. The server cuts batches at 4 MiB, but one event may be
/// larger than that on its own, and whatever the server accepted it must be able to return.
const MAX_DECODING_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// How transient transport failures are retried.
///
/// Only calls that are safe to repeat are retried: `read`, `subscribe` (before the first
/// response), `head`, `get_tracking_info`, `check_health`, and an `append` that is idempotent
/// (every event has a non-nil uuid and matches the given condition's query) or that certainly
/// never reached the server (the connection was refused).
///
/// ```
/// use std::time::Duration;
/// let policy = umadb_client::RetryPolicy {
///     max_retries: 3,
///     ..Default::default()
/// };
/// assert_eq!(policy.backoff(0), Duration::from_millis(100));
/// assert_eq!(umadb_client::RetryPolicy::none().max_retries, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further retry.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five retries over about three seconds: long enough to ride out a server restart.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Default::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Configures and connects a client. Made by [`Client::builder`](crate::Client::builder) or
/// [`blocking::Client::builder`](crate::blocking::Client::builder).
///
/// The URL scheme chooses the transport: `http://` (or `grpc://`, or no scheme) is plain
/// HTTP/2, `https://` (or `grpcs://`) is TLS, verified against the system's root certificates
/// or, when [`ca_path`](Self::ca_path) is given, against that CA only.
///
/// ```no_run
/// # async fn demo() -> umadb_client::Result<()> {
/// use std::time::Duration;
/// let client = umadb_client::Client::builder("https://localhost:50051")
///     .ca_path("server-ca.pem")
///     .api_key("umadb:example-key")
///     .batch_size(1000)
///     .connect_timeout(Duration::from_secs(3))
///     .request_timeout(Duration::from_secs(10))
///     .connect()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    pub(crate) url: String,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) api_key: Option<String>,
    pub(crate) batch_size: Option<u32>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
}

// The API key never appears in logs or debug output.
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("ca_path", &self.ca_path)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: url.into(),
            ca_path: None,
            api_key: None,
            batch_size: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            retry: RetryPolicy::default(),
        }
    }

    /// A PEM file with the CA certificate(s) that signed the server's certificate (for
    /// self-signed servers). Requires an `https://` URL.
    pub fn ca_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_path = Some(path.into());
        self
    }

    /// Sent as `authorization: Bearer <key>` with every call.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How many events the server should put in one batch of a read or subscription. A hint:
    /// the server may cap it. Unset, the server's default is used.
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Time allowed to establish a connection, including the TLS handshake. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for each attempt of a unary call (`append`, `head`, `get_tracking_info`,
    /// `check_health`) and for a read or subscription to open. Never applied to a stream as a
    /// whole. Default: none.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How transient transport failures are retried. Default: [`RetryPolicy::default`].
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Connects an async client. Fails with [`Error::Transport`] when the server cannot be
    /// reached, and with [`Error::InvalidArgument`] for a bad URL or CA file.
    pub async fn connect(self) -> Result<crate::Client> {
        crate::Client::from_builder(self).await
    }

    /// Connects a blocking client, which owns its own runtime.
    pub fn connect_blocking(self) -> Result<crate::blocking::Client> {
        crate::blocking::Client::from_builder(self)
    }

    /// The endpoint to dial, with TLS configured when the URL asks for it.
    pub(crate) fn endpoint(&self) -> Result<Endpoint> {
        let (tls, uri) = normalize_url(&self.url)?;
        if self.batch_size == Some(0) {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".to_string(),
            ));
        }
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::InvalidArgument(format!("invalid server URL {uri:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Detect a dead server during long subscriptions and in-flight calls.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if tls {
            let mut config = ClientTlsConfig::new().timeout(self.connect_timeout);
            config = match &self.ca_path {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "cannot read CA certificate file {}: {e}",
                            path.display()
                        ))
                    })?;
                    config.ca_certificate(Certificate::from_pem(pem))
                }
                None => config.with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| Error::InvalidArgument(format!("invalid TLS configuration: {e}")))?;
        } else if let Some(path) = &self.ca_path {
            return Err(Error::InvalidArgument(format!(
                "a CA certificate ({}) was given for {:?}, which is not a TLS URL: use https://",
                path.display(),
                self.url
            )));
        }
        Ok(endpoint)
    }

    pub(crate) fn max_decoding_message_size(&self) -> usize {
        MAX_DECODING_MESSAGE_SIZE
    }
}

/// Whether the URL asks for TLS (`https://`, `grpcs://`), and the URL rewritten with an
/// `http`/`https` scheme; an `InvalidArgument` error for another scheme or a missing host.
///
/// ```
/// assert_eq!(
///     umadb_client::normalize_url("grpcs://db:50051").unwrap(),
///     (true, "https://db:50051".to_string())
/// );
/// ```
pub fn normalize_url(url: &str) -> Result<(bool, String)> {
    let url = url.trim();
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("grpcs://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("grpc://") {
        (false, rest)
    } else if url.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "unsupported URL scheme in {url:?}: use http://, https://, grpc:// or grpcs://"
        )));
    } else {
        (false, url)
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "server URL {url:?} has no host"
        )));
    }
    let scheme = if tls { "https" } else { "http" };
    Ok((tls, format!("{scheme}://{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_chooses_tls() {
        assert_eq!(
            normalize_url("http://127.0.0.1:50051").unwrap(),
            (false, "http://127.0.0.1:50051".into())
        );
        assert_eq!(
            normalize_url("grpcs://db:50051").unwrap(),
            (true, "https://db:50051".into())
        );
        assert_eq!(
            normalize_url("localhost:50051").unwrap(),
            (false, "http://localhost:50051".into())
        );
        assert!(matches!(
            normalize_url("ftp://x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            normalize_url("http://"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn ca_file_with_plain_url_is_rejected() {
        let builder = ClientBuilder::new("http://127.0.0.1:1").ca_path("ca.pem");
        assert!(matches!(
            builder.endpoint(),
            Err(Error::InvalidArgument(m)) if m.contains("https://")
        ));
    }

    #[test]
    fn missing_ca_file_is_an_invalid_argument() {
        let builder = ClientBuilder::new("https://127.0.0.1:1").ca_path("/nonexistent/ca.pem");
        assert!(matches!(
            builder.endpoint(),
            Err(Error::InvalidArgument(m)) if m.contains("/nonexistent/ca.pem")
        ));
    }

    #[test]
    fn debug_output_does_not_show_the_api_key() {
        let builder = ClientBuilder::new("http://127.0.0.1:1").api_key("s3cret-key");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1), Duration::from_millis(200));
        assert_eq!(policy.backoff(10), Duration::from_secs(2));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }
}
