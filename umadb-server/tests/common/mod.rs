//! Shared test helpers: an in-process server on an ephemeral loopback port, gRPC clients, and
//! small builders for wire messages.
#![allow(dead_code)]

use prost::Message;
use std::time::Duration;
use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;
use umadb_proto::v1::error_response::ErrorType;
use umadb_server::{Limits, RunningServer, ServerConfig};

pub const WAIT: Duration = Duration::from_secs(20);

/// A server running in this process on 127.0.0.1 with its own temporary store.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path().join("db"));
        configure(&mut config);
        let server = umadb_server::start(config).await.expect("server starts");
        TestServer {
            server: Some(server),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").local_addr()
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> DcbClient<Channel> {
        DcbClient::new(self.channel().await).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub async fn client_with_key(
        &self,
        key: Option<&str>,
    ) -> DcbClient<InterceptedService<Channel, BearerKey>> {
        DcbClient::with_interceptor(self.channel().await, BearerKey(key.map(str::to_string)))
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Adds `authorization: Bearer <key>` to each call.
#[derive(Clone)]
pub struct BearerKey(pub Option<String>);

impl tonic::service::Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            let value = MetadataValue::try_from(format!("Bearer {key}"))
                .map_err(|_| Status::invalid_argument("key"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub fn small_limits() -> Limits {
    Limits {
        max_events_per_append: 10,
        default_batch_size: 3,
        max_batch_size: 5,
        ..Limits::default()
    }
}

pub fn event(event_type: &str, tags: &[&str], data: &[u8]) -> v1::Event {
    v1::Event {
        event_type: event_type.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        data: data.to_vec(),
        uuid: String::new(),
        metadata: Vec::new(),
    }
}

pub fn item(types: &[&str], tags: &[&str]) -> v1::QueryItem {
    v1::QueryItem {
        types: types.iter().map(|t| t.to_string()).collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

pub fn query(items: Vec<v1::QueryItem>) -> Option<v1::Query> {
    Some(v1::Query { items })
}

pub fn append_request(events: Vec<v1::Event>) -> v1::AppendRequest {
    v1::AppendRequest {
        events,
        condition: None,
        tracking_info: None,
    }
}

pub fn conditional(
    events: Vec<v1::Event>,
    fail_if_events_match: Option<v1::Query>,
    after: Option<u64>,
) -> v1::AppendRequest {
    v1::AppendRequest {
        events,
        condition: Some(v1::AppendCondition {
            fail_if_events_match,
            after,
        }),
        tracking_info: None,
    }
}

pub async fn append(
    client: &mut DcbClient<Channel>,
    request: v1::AppendRequest,
) -> Result<u64, Status> {
    Ok(client.append(request).await?.into_inner().position)
}

/// Every message of a read, in order.
pub async fn read_messages(
    client: &mut DcbClient<Channel>,
    request: v1::ReadRequest,
) -> Result<Vec<v1::ReadResponse>, Status> {
    let mut stream = client.read(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("read stream stalled")?
    {
        messages.push(message);
    }
    Ok(messages)
}

/// The events of a read and the head of its last message.
pub async fn read_all(
    client: &mut DcbClient<Channel>,
    request: v1::ReadRequest,
) -> Result<(Vec<v1::SequencedEvent>, Option<u64>), Status> {
    let messages = read_messages(client, request).await?;
    let head = messages.last().and_then(|m| m.head);
    Ok((messages.into_iter().flat_map(|m| m.events).collect(), head))
}

pub fn positions(events: &[v1::SequencedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// The `ErrorResponse` a status carries, asserting its code.
pub fn error_details(status: &Status, code: Code) -> v1::ErrorResponse {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert!(
        !status.details().is_empty(),
        "status carries no ErrorResponse: {status:?}"
    );
    v1::ErrorResponse::decode(status.details()).expect("ErrorResponse decodes")
}

pub fn assert_error(status: &Status, code: Code, error_type: ErrorType) -> String {
    let details = error_details(status, code);
    assert_eq!(
        details.error_type, error_type as i32,
        "unexpected error type in {details:?}"
    );
    assert!(!details.message.is_empty());
    details.message
}

/// Receives subscription events until `count` have arrived.
pub async fn receive(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
    count: usize,
) -> Vec<v1::SequencedEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("subscription stalled")
            .expect("subscription failed")
            .expect("subscription ended early");
        assert!(!message.events.is_empty(), "empty subscription message");
        events.extend(message.events);
    }
    events
}

/// A codec that sends and receives message bodies as raw bytes: lets a test put any bytes on
/// the wire as a request to a DCB method.
#[derive(Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let remaining = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, remaining).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
