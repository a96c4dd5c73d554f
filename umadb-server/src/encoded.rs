//! The streaming RPCs (`Read` and `Subscribe`) with their responses encoded to protobuf where
//! they are produced — on the read threads, for all but small batches — instead of by tonic on
//! the async threads.
//!
//! Encoding is most of what streaming events costs the server. Done by tonic, it ran on the
//! async worker threads at the priority of appends, so a few readers of the whole store (or
//! subscribers catching up) slowed every writer. [`EncodedRoutes`] serves `/umadb.v1.DCB/Read`
//! and `/umadb.v1.DCB/Subscribe` itself, with a codec that sends the bytes as they are; every
//! other path goes to the generated service. The bytes are exactly a `umadb.v1.ReadResponse`
//! or `umadb.v1.SubscribeResponse` as prost writes it (the tests decode them with prost): both
//! messages keep their events in field 1, and only `ReadResponse` has a head (field 2).

use crate::service::DcbService;
use prost::Message;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::Status;
use umadb_core::{Position, SequencedEventRef};
use umadb_proto::v1;

/// One `umadb.v1.ReadResponse` or `umadb.v1.SubscribeResponse`, encoded.
pub(crate) struct EncodedResponse(Vec<u8>);

impl EncodedResponse {
    /// A `ReadResponse` without events, telling only the head.
    pub fn head_only(head: Option<Position>) -> Self {
        EncodedResponse(
            v1::ReadResponse {
                events: Vec::new(),
                head,
            }
            .encode_to_vec(),
        )
    }
}

/// What each message of a batch says its head is.
#[derive(Clone, Copy)]
pub(crate) enum HeadField {
    /// The same head in every message (a read without a limit: the head when it began), or
    /// none (`None`: a `SubscribeResponse`, which has no head).
    Fixed(Option<Position>),
    /// The position of the message's own last event (a read with a limit, or a subscribing
    /// read).
    LastEvent,
}

/// A batch of events encoded into messages.
pub(crate) struct EncodedBatch {
    /// Each message with the position of its last event.
    pub messages: Vec<(EncodedResponse, Position)>,
    /// Events in all the messages.
    pub events: usize,
    /// Bytes the largest event took in its message.
    pub largest: usize,
}

impl EncodedBatch {
    /// Position of the batch's last event.
    pub fn last(&self) -> Option<Position> {
        self.messages.last().map(|&(_, last)| last)
    }
}

/// Builds a batch's messages of at most `max_bytes` (an event larger than that goes alone),
/// event by event, in order, each encoded from where the read found it.
pub(crate) struct BatchEncoder {
    batch: EncodedBatch,
    buf: Vec<u8>,
    last: Position,
    head: HeadField,
    max_bytes: usize,
}

impl BatchEncoder {
    pub fn new(head: HeadField, max_bytes: usize) -> Self {
        BatchEncoder {
            batch: EncodedBatch {
                messages: Vec::new(),
                events: 0,
                largest: 0,
            },
            buf: Vec::new(),
            last: 0,
            head,
            max_bytes,
        }
    }

    pub fn push(&mut self, event: &SequencedEventRef<'_>) {
        let start = self.buf.len();
        umadb_proto::borrowed::encode_sequenced_event(1, event, &mut self.buf);
        self.batch.events += 1;
        self.batch.largest = self.batch.largest.max(self.buf.len() - start);
        if start > 0 && self.buf.len() > self.max_bytes {
            let next = self.buf.split_off(start);
            let full = std::mem::replace(&mut self.buf, next);
            self.batch.messages.push(finish(full, self.last, self.head));
        }
        self.last = event.position;
    }

    pub fn finish(mut self) -> EncodedBatch {
        if !self.buf.is_empty() {
            self.batch
                .messages
                .push(finish(self.buf, self.last, self.head));
        }
        self.batch
    }
}

fn finish(mut buf: Vec<u8>, last: Position, head: HeadField) -> (EncodedResponse, Position) {
    let head = match head {
        HeadField::Fixed(head) => head,
        HeadField::LastEvent => Some(last),
    };
    if let Some(head) = head {
        prost::encoding::uint64::encode(2, &head, &mut buf);
    }
    (EncodedResponse(buf), last)
}

/// Sends encoded responses as they are; decodes requests of type `R` as the generated code
/// does.
struct EncodedCodec<R>(PhantomData<R>);

struct BytesEncoder;

struct RequestDecoder<R>(PhantomData<R>);

impl Encoder for BytesEncoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(dst, &item.0);
        Ok(())
    }
}

impl<R: Message + Default> Decoder for RequestDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // INTERNAL without details, as tonic reports undecodable requests: `wire_errors`
        // turns it into the INVALID_ARGUMENT error DESIGN.md gives bad input.
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<R: Message + Default + Send + 'static> Codec for EncodedCodec<R> {
    type Encode = EncodedResponse;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

/// Calls `handle` on the service with each request of type `R`.
struct Handler<R> {
    dcb: Arc<DcbService>,
    handle: fn(&DcbService, tonic::Request<R>) -> Result<tonic::Response<Outbox>, Status>,
}

type Outbox = crate::outbox::Outbox<EncodedResponse>;

impl<R: Send + 'static> ServerStreamingService<R> for Handler<R> {
    type Response = EncodedResponse;
    type ResponseStream = Outbox;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<R>) -> Self::Future {
        let (dcb, handle) = (self.dcb.clone(), self.handle);
        Box::pin(async move { handle(&dcb, request) })
    }
}

const READ_PATH: &str = "/umadb.v1.DCB/Read";
const SUBSCRIBE_PATH: &str = "/umadb.v1.DCB/Subscribe";

/// Serves `Read` and `Subscribe` with [`EncodedCodec`]; passes every other request to `inner`.
#[derive(Clone)]
pub(crate) struct EncodedRoutes<S> {
    inner: S,
    dcb: Arc<DcbService>,
    max_message_bytes: usize,
}

impl<S> EncodedRoutes<S> {
    pub fn new(inner: S, dcb: Arc<DcbService>, max_message_bytes: usize) -> Self {
        EncodedRoutes {
            inner,
            dcb,
            max_message_bytes,
        }
    }

    fn serve<R>(
        &self,
        handle: fn(&DcbService, tonic::Request<R>) -> Result<tonic::Response<Outbox>, Status>,
        request: http::Request<Body>,
    ) -> BoxFuture<http::Response<Body>, Infallible>
    where
        R: Message + Default + Send + 'static,
    {
        let handler = Handler {
            dcb: self.dcb.clone(),
            handle,
        };
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(EncodedCodec::<R>(PhantomData))
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(handler, request).await)
        })
    }
}

impl<S: NamedService> NamedService for EncodedRoutes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for EncodedRoutes<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            READ_PATH => self.serve(DcbService::read_encoded, request),
            SUBSCRIBE_PATH => self.serve(DcbService::subscribe_encoded, request),
            _ => Box::pin(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umadb_core::{Event, SequencedEvent};

    fn encode_batch(
        events: Vec<SequencedEvent>,
        head: HeadField,
        max_bytes: usize,
    ) -> EncodedBatch {
        let mut encoder = BatchEncoder::new(head, max_bytes);
        for e in &events {
            encoder.push(&e.into());
        }
        encoder.finish()
    }

    fn event(position: Position, data_len: usize) -> SequencedEvent {
        let mut event = Event::new("T", ["tag"], vec![7; data_len]);
        event.metadata = vec![("k".into(), "v".into())];
        SequencedEvent {
            position,
            event,
            tracking_info: None,
        }
    }

    fn decode(message: &EncodedResponse) -> v1::ReadResponse {
        v1::ReadResponse::decode(message.0.as_slice()).expect("a valid ReadResponse")
    }

    #[test]
    fn messages_are_exactly_what_prost_encodes_for_the_same_response() {
        let events: Vec<_> = (1..=5).map(|p| event(p, 10)).collect();
        let batch = encode_batch(events.clone(), HeadField::Fixed(Some(99)), 1 << 20);
        assert_eq!(batch.messages.len(), 1);
        let expected = v1::ReadResponse {
            events: events.into_iter().map(Into::into).collect(),
            head: Some(99),
        };
        assert_eq!(batch.messages[0].0 .0, expected.encode_to_vec());
        assert_eq!(batch.messages[0].1, 5);
    }

    #[test]
    fn without_a_head_messages_are_exactly_what_prost_encodes_for_a_subscribe_response() {
        let events: Vec<_> = (1..=5).map(|p| event(p, 10)).collect();
        let batch = encode_batch(events.clone(), HeadField::Fixed(None), 1 << 20);
        let expected = v1::SubscribeResponse {
            events: events.into_iter().map(Into::into).collect(),
        };
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].0 .0, expected.encode_to_vec());
        assert_eq!((batch.events, batch.last()), (5, Some(5)));
    }

    #[test]
    fn messages_stay_under_the_byte_limit_keep_order_and_carry_the_head_asked_for() {
        let events: Vec<_> = (1..=100).map(|p| event(p, 1000)).collect();
        let fixed = encode_batch(events.clone(), HeadField::Fixed(Some(100)), 10_000);
        assert!(fixed.messages.len() > 1);
        let mut next = 1;
        for (message, last) in &fixed.messages {
            assert!(message.0.len() <= 10_000 + 16, "{} bytes", message.0.len());
            let decoded = decode(message);
            assert_eq!(decoded.head, Some(100));
            for e in &decoded.events {
                assert_eq!(e.position, next);
                next += 1;
            }
            assert_eq!(*last, next - 1);
        }
        assert_eq!(next, 101);
        let limited = encode_batch(events, HeadField::LastEvent, 10_000);
        for (message, last) in &limited.messages {
            assert_eq!(decode(message).head, Some(*last));
        }
    }

    #[test]
    fn an_event_larger_than_the_limit_goes_alone() {
        let events = vec![event(1, 10), event(2, 50_000), event(3, 10)];
        let batch = encode_batch(events, HeadField::LastEvent, 10_000);
        let sizes: Vec<_> = batch
            .messages
            .iter()
            .map(|(m, _)| decode(m).events.len())
            .collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(batch.largest > 50_000);
    }
}
