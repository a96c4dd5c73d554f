//! The Read RPC with its responses encoded to protobuf where they are produced — on the read
//! threads, for all but a read's first small batch — instead of by tonic on the async threads.
//!
//! Encoding is most of what streaming a long read costs the server. Done by tonic, it ran on the
//! async worker threads at the priority of appends, so a few readers of the whole store slowed
//! every writer. [`ReadRoute`] serves `/umadb.v1.DCB/Read` itself, with a codec that sends the
//! bytes as they are; every other path goes to the generated service. The bytes are exactly a
//! `umadb.v1.ReadResponse` as prost writes it (the tests decode them with prost).

use crate::service::DcbService;
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::Status;
use umadb_core::{Position, SequencedEvent};
use umadb_proto::v1;

/// One `umadb.v1.ReadResponse`, encoded.
pub(crate) struct EncodedReadResponse(Vec<u8>);

impl EncodedReadResponse {
    /// A message of wire events; its head is the last event's position.
    pub fn of_wire(events: Vec<v1::SequencedEvent>) -> Self {
        let head = events.last().map(|e| e.position);
        EncodedReadResponse(v1::ReadResponse { events, head }.encode_to_vec())
    }

    /// A message without events, telling only the head.
    pub fn head_only(head: Option<Position>) -> Self {
        EncodedReadResponse(
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
    /// The same head in every message (a read without a limit: the head when it began).
    Fixed(Option<Position>),
    /// The position of the message's own last event (a read with a limit).
    LastEvent,
}

/// A batch of events encoded into messages.
pub(crate) struct EncodedBatch {
    /// Each message with the position of its last event.
    pub messages: Vec<(EncodedReadResponse, Position)>,
    /// Bytes the largest event took in its message.
    pub largest: usize,
}

/// Encodes `events` into messages of at most `max_bytes` (an event larger than that goes
/// alone), in order.
pub(crate) fn encode_batch(
    events: Vec<SequencedEvent>,
    head: HeadField,
    max_bytes: usize,
) -> EncodedBatch {
    let mut batch = EncodedBatch {
        messages: Vec::new(),
        largest: 0,
    };
    let mut buf = Vec::new();
    let mut last = 0;
    for event in events {
        let position = event.position;
        let start = buf.len();
        prost::encoding::message::encode(1, &v1::SequencedEvent::from(event), &mut buf);
        batch.largest = batch.largest.max(buf.len() - start);
        if start > 0 && buf.len() > max_bytes {
            let next = buf.split_off(start);
            batch
                .messages
                .push(finish(std::mem::replace(&mut buf, next), last, head));
        }
        last = position;
    }
    if !buf.is_empty() {
        batch.messages.push(finish(buf, last, head));
    }
    batch
}

fn finish(mut buf: Vec<u8>, last: Position, head: HeadField) -> (EncodedReadResponse, Position) {
    let head = match head {
        HeadField::Fixed(head) => head,
        HeadField::LastEvent => Some(last),
    };
    if let Some(head) = head {
        prost::encoding::uint64::encode(2, &head, &mut buf);
    }
    (EncodedReadResponse(buf), last)
}

/// Sends encoded responses as they are; decodes `ReadRequest`s as the generated code does.
#[derive(Default)]
struct ReadCodec;

struct BytesEncoder;

struct RequestDecoder;

impl Encoder for BytesEncoder {
    type Item = EncodedReadResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(dst, &item.0);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = v1::ReadRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // INTERNAL without details, as tonic reports undecodable requests: `wire_errors`
        // turns it into the SERIALIZATION error of DESIGN.md.
        v1::ReadRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for ReadCodec {
    type Encode = EncodedReadResponse;
    type Decode = v1::ReadRequest;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder
    }
}

struct ReadHandler(Arc<DcbService>);

impl ServerStreamingService<v1::ReadRequest> for ReadHandler {
    type Response = EncodedReadResponse;
    type ResponseStream = crate::outbox::Outbox<EncodedReadResponse>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<v1::ReadRequest>) -> Self::Future {
        let dcb = self.0.clone();
        Box::pin(async move { dcb.read_encoded(request) })
    }
}

const READ_PATH: &str = "/umadb.v1.DCB/Read";

/// Serves `Read` with [`ReadCodec`]; passes every other request to `inner`.
#[derive(Clone)]
pub(crate) struct ReadRoute<S> {
    inner: S,
    dcb: Arc<DcbService>,
    max_message_bytes: usize,
}

impl<S> ReadRoute<S> {
    pub fn new(inner: S, dcb: Arc<DcbService>, max_message_bytes: usize) -> Self {
        ReadRoute {
            inner,
            dcb,
            max_message_bytes,
        }
    }
}

impl<S: NamedService> NamedService for ReadRoute<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for ReadRoute<S>
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
        if request.uri().path() != READ_PATH {
            return Box::pin(self.inner.call(request));
        }
        let handler = ReadHandler(self.dcb.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(ReadCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(handler, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umadb_core::Event;

    fn event(position: Position, data_len: usize) -> SequencedEvent {
        let mut event = Event::new("T", ["tag"], vec![7; data_len]);
        event.metadata = vec![("k".into(), "v".into())];
        SequencedEvent {
            position,
            event,
            tracking_info: None,
        }
    }

    fn decode(message: &EncodedReadResponse) -> v1::ReadResponse {
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
