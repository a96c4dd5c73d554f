//! How the client dials the server: TCP with `TCP_NODELAY`, the HTTP/2 frames written through
//! [`Coalesce`] so that a call's request headers and message leave in one write (one segment
//! for the server to wake up to, instead of two). TLS, when the URL asks for it, is layered
//! above this by tonic; below TLS the bytes are records, not frames, and pass straight through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::Uri;
use umadb_proto::coalesce::{Coalesce, Side};

/// A tonic connector: `Service<Uri>` yielding a connected socket.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    /// Whether the connection carries HTTP/2 frames as they are (no TLS).
    plain: bool,
}

impl Connector {
    pub(crate) fn new(tls: bool) -> Self {
        Connector { plain: !tls }
    }
}

type Connected = TokioIo<Coalesce<TcpStream>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Connected;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let plain = self.plain;
        Box::pin(async move {
            let (host, port) = host_and_port(&uri)?;
            // Every address the name resolves to is tried in turn, as for any TCP client.
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(Coalesce::new(stream, Side::Client, plain)))
        })
    }
}

/// The host to resolve (an IPv6 literal without its brackets) and the port, by default that of
/// the scheme.
fn host_and_port(uri: &Uri) -> io::Result<(String, u16)> {
    let host = uri.host().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server URL {uri} has no host"),
        )
    })?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, u16) {
        host_and_port(&url.parse().expect("a valid URI")).expect("a host")
    }

    #[test]
    fn hosts_and_ports_are_taken_from_the_url() {
        assert_eq!(parts("http://127.0.0.1:50051"), ("127.0.0.1".into(), 50051));
        assert_eq!(parts("http://[::1]:7000"), ("::1".into(), 7000));
        assert_eq!(parts("https://localhost"), ("localhost".into(), 443));
        assert_eq!(parts("http://db.internal"), ("db.internal".into(), 80));
    }
}
