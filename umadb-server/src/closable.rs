//! Connections the server can close by force. Graceful shutdown waits for open calls; a call
//! that never ends (a health watch, a client that stopped reading) would hold it forever, so
//! after the grace period every connection's socket starts failing, which ends its calls.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::transport::server::Connected;

pub(crate) struct Closable<IO> {
    io: IO,
    close: Pin<Box<dyn Future<Output = ()> + Send>>,
    closed: bool,
    /// The connection's place under the connection limit, given back when it is dropped.
    _permit: OwnedSemaphorePermit,
}

impl<IO> Closable<IO> {
    /// Wraps `io`; it fails once `close` holds `true`.
    pub fn new(io: IO, mut close: watch::Receiver<bool>, permit: OwnedSemaphorePermit) -> Self {
        Closable {
            io,
            close: Box::pin(async move {
                let _ = close.wait_for(|closed| *closed).await;
            }),
            closed: false,
            _permit: permit,
        }
    }

    /// Whether the connection was closed; registers for a wake-up if not.
    fn is_closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.close.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the server closed the connection while shutting down",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Closable<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Closable<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Closable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
