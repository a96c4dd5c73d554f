//! The load generator's HTTP/2 transport: one hyper connection per simulated client, used
//! directly. tonic's `Channel` puts a buffer task between the caller and the connection, one
//! more task wakeup per request that the load generator would pay on the same two cores as
//! the server it measures. The socket is written through `Coalesce`, as the Rust client's is,
//! so a call's headers and message leave in one write.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::body::Body;
use umadb_proto::coalesce::{Coalesce, Side};

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Body>,
}

type Response = http::Response<hyper::body::Incoming>;

impl Connection {
    /// Connects to `http://host:port` (plain text only, as the load generator runs on loopback).
    pub async fn open(url: &str) -> Result<(Connection, http::Uri), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "bad url {url}: the load generator speaks plain http:// only"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("bad url {url}: no host:port"))?
            .as_str()
            .to_string();
        let stream = TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY on {url}: {e}"))?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(TokioIo::new(Coalesce::new(stream, Side::Client, true)))
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((Connection { send }, uri))
    }
}

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = Response;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
