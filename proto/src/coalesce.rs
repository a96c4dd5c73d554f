//! One socket write per gRPC message exchange where h2 would make two.
//!
//! h2 flushes what it has encoded whenever its task runs out of frames, and the frames of one
//! call are often ready a moment apart:
//! - on a server, h2 writes a DATA frame larger than 256 bytes straight from its buffer and
//!   flushes it before it will encode anything else, so a response's closing status (its
//!   trailers) goes out in a second write, and the client wakes twice for one answer;
//! - on a client, a request's HEADERS frame is flushed before the task that sends its body has
//!   run, so the message follows in a second write, and the server wakes twice for one call.
//!
//! `Coalesce` holds small writes back and, when a flush ends on a frame that its stream's next
//! frames will follow, defers that flush (once on a server, up to twice on a client): the task
//! runs again at once, h2 encodes the rest, and all of it leaves in one write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Most bytes held back. A write that would pass it goes to the socket at once, together with
/// what is held and without being copied.
const HOLD_LIMIT: usize = 16 * 1024;

/// Buffer capacity a connection keeps once everything held is written. A burst of small frames
/// may grow the buffer to `HOLD_LIMIT`; an idle connection gives the rest back, so thousands of
/// open connections do not each keep that much.
const KEEP_CAPACITY: usize = 4 * 1024;

const FRAME_HEADER_LEN: usize = 9;
/// What a client writes before its first frame (RFC 9113, section 3.4).
const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_TYPE_DATA: u8 = 0x0;
const FRAME_TYPE_HEADERS: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;

/// Which end of the HTTP/2 connection writes through a [`Coalesce`]: it decides which open
/// frames are worth waiting after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A response's DATA frame is followed by its trailers.
    Server,
    /// A request's HEADERS frame is followed by its message (and a DATA frame by the end of
    /// the stream).
    Client,
}

impl Side {
    /// How many times in a row a flush may be put off. A client's unary call takes two: its
    /// HEADERS frame, then the DATA frame carrying its message, come before the empty DATA
    /// frame that ends the stream. A server's response needs one, for its trailers.
    fn max_deferrals(self) -> u8 {
        match self {
            Side::Server => 1,
            Side::Client => 2,
        }
    }
}

/// A socket that holds HTTP/2 frames back until the frames that follow them at once are written
/// too (see the module documentation).
pub struct Coalesce<IO> {
    io: IO,
    /// Bytes accepted from h2 and not yet written to the socket.
    held: Vec<u8>,
    /// How far into `held` the socket has taken.
    written: usize,
    /// How many times the current flush was put off.
    deferred: u8,
    /// Whether the bytes written are HTTP/2 frames (no TLS): only then is anything held back.
    plain: bool,
    frames: FrameTracker,
}

impl<IO> Coalesce<IO> {
    /// Wraps `io`, written by the `side` end of a connection; `plain` says the bytes written to
    /// it are HTTP/2 frames (no TLS). Otherwise writes pass straight through.
    pub fn new(io: IO, side: Side, plain: bool) -> Self {
        Coalesce {
            io,
            held: Vec::new(),
            written: 0,
            deferred: 0,
            plain,
            frames: FrameTracker::new(side),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesce<IO> {
    /// Writes out everything held; `Ready(Ok)` once nothing is.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.held[self.written..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.emptied();
        Poll::Ready(Ok(()))
    }

    /// Everything held has been written.
    fn emptied(&mut self) {
        self.written = 0;
        if self.held.capacity() > KEEP_CAPACITY {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
    }

    fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        let mut total = 0;
        for buf in bufs {
            self.held.extend_from_slice(buf);
            self.frames.track(buf);
            total += buf.len();
        }
        total
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesce<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.plain {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held.len() - this.written + total <= HOLD_LIMIT {
            return Poll::Ready(Ok(this.hold(bufs)));
        }
        // Too much to hold: what is held and this write go out together, this one uncopied.
        loop {
            let held = this.held.len() - this.written;
            if held == 0 {
                let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
                this.frames.track_written(bufs, n);
                return Poll::Ready(Ok(n));
            }
            let mut slices = Vec::with_capacity(bufs.len() + 1);
            slices.push(io::IoSlice::new(&this.held[this.written..]));
            slices.extend(bufs.iter().map(|b| io::IoSlice::new(b)));
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n <= held {
                this.written += n;
                continue;
            }
            this.emptied();
            this.frames.track_written(bufs, n - held);
            return Poll::Ready(Ok(n - held));
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.plain || self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plain
            && this.written < this.held.len()
            && this.deferred < this.frames.side.max_deferrals()
            && this.frames.awaits_more()
        {
            // Let the task run once more, so the frames that close the stream join this write.
            this.deferred += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        this.deferred = 0;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Coalesce<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Follows the HTTP/2 frames in the bytes written, to know the last one.
struct FrameTracker {
    side: Side,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// A frame header split across writes.
    header: Vec<u8>,
    /// The type and flags of the last frame whose header was seen.
    last: Option<(u8, u8)>,
}

impl FrameTracker {
    fn new(side: Side) -> Self {
        FrameTracker {
            side,
            // A client's first bytes are the connection preface, which is not a frame.
            remaining: match side {
                Side::Server => 0,
                Side::Client => CLIENT_PREFACE.len(),
            },
            header: Vec::new(),
            last: None,
        }
    }

    fn track(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let need = FRAME_HEADER_LEN - self.header.len();
            let take = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == FRAME_HEADER_LEN {
                let h = &self.header;
                self.remaining =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.last = Some((h[3], h[4]));
                self.header.clear();
            }
        }
    }

    /// Follows the first `n` bytes of `bufs`, those the socket took.
    fn track_written(&mut self, bufs: &[io::IoSlice<'_>], n: usize) {
        let mut rest = n;
        for buf in bufs {
            if rest == 0 {
                break;
            }
            let take = rest.min(buf.len());
            self.track(&buf[..take]);
            rest -= take;
        }
    }

    /// Whether the last frame leaves its stream open with more of it coming at once: on a
    /// server, a DATA frame before the status of a response (a HEADERS frame); on a client,
    /// also the HEADERS frame of a request before its message.
    fn awaits_more(&self) -> bool {
        match self.last {
            Some((kind, flags)) if flags & FLAG_END_STREAM == 0 => match self.side {
                Side::Server => kind == FRAME_TYPE_DATA,
                Side::Client => kind == FRAME_TYPE_DATA || kind == FRAME_TYPE_HEADERS,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A socket that records each write call and takes at most `room` bytes per call.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        room: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.room);
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(this.room);
            this.writes.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn frame(kind: u8, flags: u8, payload_len: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload_len >> 16) as u8,
            (payload_len >> 8) as u8,
            payload_len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        bytes.resize(FRAME_HEADER_LEN + payload_len, 0xab);
        bytes
    }

    const HEADERS: u8 = FRAME_TYPE_HEADERS;
    const END_HEADERS: u8 = 0x4;
    const SETTINGS: u8 = 0x4;

    struct Harness {
        io: Coalesce<Recorder>,
        wakes: Arc<Wakes>,
        waker: Waker,
    }

    impl Harness {
        fn new(plain: bool, room: usize) -> Self {
            Harness::on(Side::Server, plain, room)
        }

        fn on(side: Side, plain: bool, room: usize) -> Self {
            let wakes = Arc::new(Wakes::default());
            Harness {
                io: Coalesce::new(
                    Recorder {
                        writes: Vec::new(),
                        room,
                    },
                    side,
                    plain,
                ),
                waker: Waker::from(wakes.clone()),
                wakes,
            }
        }

        fn write(&mut self, bytes: &[u8]) -> usize {
            let mut cx = Context::from_waker(&self.waker);
            match Pin::new(&mut self.io).poll_write(&mut cx, bytes) {
                Poll::Ready(Ok(n)) => n,
                other => panic!("the write did not complete: {other:?}"),
            }
        }

        fn flush(&mut self) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.io).poll_flush(&mut cx)
        }

        fn writes(&self) -> &[Vec<u8>] {
            &self.io.io.writes
        }
    }

    #[test]
    fn a_response_whose_data_frame_was_flushed_alone_leaves_with_its_trailers_in_one_write() {
        let mut h = Harness::new(true, usize::MAX);
        let head = frame(HEADERS, END_HEADERS, 20);
        let data = frame(FRAME_TYPE_DATA, 0, 1500);
        let trailers = frame(HEADERS, END_HEADERS | FLAG_END_STREAM, 30);
        assert_eq!(h.write(&head), head.len());
        assert_eq!(h.write(&data), data.len());
        assert!(
            h.flush().is_pending(),
            "a flush ending on open DATA is put off once"
        );
        assert_eq!(
            h.wakes.0.load(Ordering::SeqCst),
            1,
            "and the task is woken to go on"
        );
        assert!(h.writes().is_empty());
        h.write(&trailers);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        let expected: Vec<u8> = [head, data, trailers].concat();
        assert_eq!(h.writes(), &[expected], "one write, the frames in order");
    }

    #[test]
    fn a_request_whose_headers_were_flushed_alone_leaves_with_its_message_in_one_write() {
        let mut h = Harness::on(Side::Client, true, usize::MAX);
        // The connection opens with the preface, which is not a frame, and SETTINGS.
        let settings = frame(SETTINGS, 0, 12);
        h.write(CLIENT_PREFACE);
        h.write(&settings);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.writes(), &[[CLIENT_PREFACE, &settings[..]].concat()]);
        let head = frame(HEADERS, END_HEADERS, 60);
        let message = frame(FRAME_TYPE_DATA, 0, 120);
        let end = frame(FRAME_TYPE_DATA, FLAG_END_STREAM, 0);
        h.write(&head);
        assert!(
            h.flush().is_pending(),
            "a client's flush ending on open HEADERS is put off"
        );
        h.write(&message);
        assert!(h.flush().is_pending(), "and once more after its message");
        h.write(&end);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(h.writes()[1], [head, message, end].concat());
        // Twice at most: a message whose end is late leaves without it.
        let head = frame(HEADERS, END_HEADERS, 60);
        h.write(&head);
        assert!(h.flush().is_pending());
        assert!(h.flush().is_pending());
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.writes()[2], head);
    }

    #[test]
    fn a_server_does_not_wait_after_response_headers_nor_a_client_after_a_closed_request() {
        // A server's response headers may precede a stream's first batch by long: no waiting.
        let mut server = Harness::new(true, usize::MAX);
        let head = frame(HEADERS, END_HEADERS, 20);
        server.write(&head);
        assert!(matches!(server.flush(), Poll::Ready(Ok(()))));
        assert_eq!(server.writes(), &[head]);
        // A request without a message (its HEADERS end the stream) leaves at once.
        let mut client = Harness::on(Side::Client, true, usize::MAX);
        let closed = frame(HEADERS, END_HEADERS | FLAG_END_STREAM, 20);
        client.write(&closed);
        assert!(matches!(client.flush(), Poll::Ready(Ok(()))));
        assert_eq!(client.writes(), &[closed]);
        assert_eq!(server.wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(client.wakes.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_flush_is_put_off_only_once_and_not_after_a_closing_frame() {
        let mut h = Harness::new(true, usize::MAX);
        let data = frame(FRAME_TYPE_DATA, 0, 300);
        h.write(&data);
        assert!(h.flush().is_pending());
        // Nothing more came: the second flush writes.
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.writes(), &[data]);
        // A response that ends its stream is written at its first flush.
        let closing = frame(FRAME_TYPE_DATA, FLAG_END_STREAM, 300);
        h.write(&closing);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.writes().len(), 2);
        assert_eq!(h.writes()[1], closing);
        assert_eq!(h.wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn frames_split_across_writes_are_followed() {
        let mut h = Harness::new(true, usize::MAX);
        let mut bytes = frame(HEADERS, END_HEADERS, 10);
        bytes.extend(frame(FRAME_TYPE_DATA, 0, 40));
        // Byte by byte, so that every header is split.
        for b in &bytes {
            h.write(std::slice::from_ref(b));
        }
        assert!(
            h.flush().is_pending(),
            "the last frame was seen to be open DATA"
        );
        let mut closing = frame(HEADERS, END_HEADERS | FLAG_END_STREAM, 5);
        let tail = closing.split_off(4);
        h.write(&closing);
        h.write(&tail);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.writes().len(), 1);
        assert!(h.io.frames.header.is_empty() && h.io.frames.remaining == 0);
    }

    #[test]
    fn a_large_write_goes_out_uncopied_after_what_is_held() {
        let mut h = Harness::new(true, usize::MAX);
        let head = frame(HEADERS, END_HEADERS, 20);
        h.write(&head);
        let big = frame(FRAME_TYPE_DATA, 0, HOLD_LIMIT + 10);
        assert_eq!(h.write(&big), big.len());
        assert_eq!(h.writes(), &[[head, big].concat()]);
        assert!(h.flush().is_ready(), "nothing held, nothing to put off");
    }

    #[test]
    fn a_socket_taking_part_of_a_write_gets_the_rest_later_in_order() {
        let mut h = Harness::new(true, 1000);
        let head = frame(HEADERS, END_HEADERS, 1500);
        h.write(&head);
        let big = frame(FRAME_TYPE_DATA, FLAG_END_STREAM, HOLD_LIMIT + 10);
        let mut sent = 0;
        while sent < big.len() {
            sent += h.write(&big[sent..]);
        }
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        let all: Vec<u8> = h.writes().concat();
        assert_eq!(all, [head, big].concat());
        assert!(h.writes().iter().all(|w| w.len() <= 1000));
    }

    #[test]
    fn a_connection_gives_back_a_large_buffer_once_it_is_written() {
        let mut h = Harness::new(true, usize::MAX);
        // Many small frames: all held, growing the buffer well past what is kept.
        let small = frame(FRAME_TYPE_DATA, 0, 200);
        for _ in 0..(HOLD_LIMIT / small.len()) {
            h.write(&small);
        }
        assert!(h.io.held.capacity() > KEEP_CAPACITY);
        let closing = frame(HEADERS, END_HEADERS | FLAG_END_STREAM, 10);
        h.write(&closing);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert!(h.io.held.capacity() <= KEEP_CAPACITY);
        // A small response keeps its buffer for the next one.
        h.write(&closing);
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert!(h.io.held.capacity() > 0 && h.io.held.capacity() <= KEEP_CAPACITY);
        let written: usize = h.writes().iter().map(Vec::len).sum();
        assert_eq!(
            written,
            (HOLD_LIMIT / small.len()) * small.len() + 2 * closing.len()
        );
    }

    #[test]
    fn behind_tls_writes_pass_straight_through() {
        let mut h = Harness::new(false, usize::MAX);
        let data = frame(FRAME_TYPE_DATA, 0, 300);
        h.write(&data);
        assert_eq!(h.writes(), &[data], "written at once");
        assert!(h.flush().is_ready(), "never put off");
        assert_eq!(h.wakes.0.load(Ordering::SeqCst), 0);
    }
}
