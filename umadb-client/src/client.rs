//! The async client.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use umadb_proto::v1;
use umadb_proto::v1::dcb_client::DcbClient;

use crate::auth::ApiKey;
use crate::connector::Connector;
use crate::retry::{connect_error, with_retry, Repeat};
use crate::{
    AppendCondition, AppendRequest, ClientBuilder, Error, Event, Position, Query, ReadResponse,
    Result, RetryPolicy, Subscription, TrackingInfo,
};

type Transport = InterceptedService<Channel, ApiKey>;

/// An async UmaDB client. Cheap to clone: clones share one connection, which is re-established
/// on the next call after it breaks (for example when the server restarts).
///
/// ```no_run
/// use umadb_client::{AppendCondition, Client, Event, Query, QueryItem, Uuid};
///
/// # async fn demo() -> umadb_client::Result<()> {
/// let client = Client::connect("http://127.0.0.1:50051").await?;
/// let boundary = Query::from_items([QueryItem::new(["CourseDefined"], ["course:c1"])]);
/// let (events, head) = client
///     .read(Some(boundary.clone()), None, false, None)
///     .await?
///     .collect_with_head()
///     .await?;
/// if events.is_empty() {
///     let event = Event::new("CourseDefined", ["course:c1"], b"{}".to_vec())
///         .with_uuid(Uuid::new_v4());
///     let condition = AppendCondition { fail_if_events_match: boundary, after: head };
///     let position = client.append(vec![event], Some(condition), None).await?;
///     println!("defined at {position}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    dcb: DcbClient<Transport>,
    health: HealthClient<Transport>,
    batch_size: Option<u32>,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("batch_size", &self.batch_size)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Options for a new client: TLS CA file, API key, batch size, timeouts, retries.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Connects with default options.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).connect().await
    }

    pub(crate) async fn from_builder(builder: ClientBuilder) -> Result<Client> {
        let endpoint = builder.endpoint()?;
        let api_key = ApiKey::new(builder.api_key.as_deref())?;
        let channel = endpoint
            .connect_with_connector(Connector::new(endpoint.uri().scheme_str() == Some("https")))
            .await
            .map_err(|e| connect_error(e, &builder.url))?;
        let transport = InterceptedService::new(channel, api_key);
        Ok(Client {
            dcb: DcbClient::new(transport.clone())
                .max_decoding_message_size(builder.max_decoding_message_size()),
            health: HealthClient::new(transport),
            batch_size: builder.batch_size,
            request_timeout: builder.request_timeout,
            retry: builder.retry,
        })
    }

    /// Appends `events` atomically and returns the position of the last one (for an idempotent
    /// retry, of the last matching event already recorded; 0 when `events` is empty).
    ///
    /// Fails with [`Error::Integrity`] when `condition` fails or `tracking_info` is not after
    /// the position recorded for its source. A transport failure is retried only when repeating
    /// the append cannot write twice: every event has a non-nil uuid and matches the
    /// condition's query (so the server recognises the retry), or the connection was refused
    /// before anything was sent.
    pub async fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
        tracking_info: Option<TrackingInfo>,
    ) -> Result<Position> {
        let request = AppendRequest {
            events,
            condition,
            tracking_info,
        };
        let repeat = if is_idempotent(&request) {
            Repeat::Safe
        } else {
            Repeat::IfNeverSent
        };
        let request = v1::AppendRequest::from(request);
        with_retry(&self.retry, self.request_timeout, repeat, "append", || {
            let mut dcb = self.dcb.clone();
            let request = request.clone();
            async move { dcb.append(request).await }
        })
        .await
        .map(|response| response.into_inner().position)
    }

    /// Reads the events matching `query` (`None`: every event) in position order, from
    /// `start` inclusive (`None`: from the first event, or the last when `backwards`), at most
    /// `limit` of them. Returns once the server has accepted the read; events then stream
    /// lazily in batches.
    pub async fn read(
        &self,
        query: Option<Query>,
        start: Option<Position>,
        backwards: bool,
        limit: Option<u64>,
    ) -> Result<ReadResponse> {
        let limit = limit
            .map(|limit| {
                u32::try_from(limit).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "read limit {limit} is larger than the protocol allows ({})",
                        u32::MAX
                    ))
                })
            })
            .transpose()?;
        let request = v1::ReadRequest {
            query: wire_query(query),
            start,
            backwards: Some(backwards),
            limit,
            subscribe: None,
            batch_size: self.batch_size,
        };
        let stream = with_retry(
            &self.retry,
            self.request_timeout,
            Repeat::Safe,
            "read",
            || {
                let mut dcb = self.dcb.clone();
                let request = request.clone();
                async move { dcb.read(request).await }
            },
        )
        .await?;
        Ok(ReadResponse::new(stream.into_inner()))
    }

    /// Subscribes to the events matching `query` (`None`: every event) with positions after
    /// `after` (`None`: all of them): recorded ones first, then new ones as they are committed.
    /// Returns once the server has accepted the subscription, even if nothing matches yet.
    pub async fn subscribe(
        &self,
        query: Option<Query>,
        after: Option<Position>,
    ) -> Result<Subscription> {
        let request = v1::SubscribeRequest {
            query: wire_query(query),
            after,
            batch_size: self.batch_size,
        };
        let stream = with_retry(
            &self.retry,
            self.request_timeout,
            Repeat::Safe,
            "subscribe",
            || {
                let mut dcb = self.dcb.clone();
                let request = request.clone();
                async move { dcb.subscribe(request).await }
            },
        )
        .await?;
        Ok(Subscription::new(stream.into_inner()))
    }

    /// The position of the last recorded event, or `None` for an empty store.
    pub async fn head(&self) -> Result<Option<Position>> {
        with_retry(
            &self.retry,
            self.request_timeout,
            Repeat::Safe,
            "head",
            || {
                let mut dcb = self.dcb.clone();
                async move { dcb.head(v1::HeadRequest {}).await }
            },
        )
        .await
        .map(|response| response.into_inner().position)
    }

    /// The position recorded for the upstream `source`, or `None` if none is recorded.
    pub async fn get_tracking_info(&self, source: &str) -> Result<Option<Position>> {
        let request = v1::TrackingRequest {
            source: source.to_string(),
        };
        with_retry(
            &self.retry,
            self.request_timeout,
            Repeat::Safe,
            "get_tracking_info",
            || {
                let mut dcb = self.dcb.clone();
                let request = request.clone();
                async move { dcb.get_tracking_info(request).await }
            },
        )
        .await
        .map(|response| response.into_inner().position)
    }

    /// Asks the server's standard gRPC health service whether it is serving: `Ok(true)` when
    /// it is, `Ok(false)` when it answers that it is not (for example while shutting down),
    /// an error when it cannot be reached.
    pub async fn check_health(&self) -> Result<bool> {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        with_retry(
            &self.retry,
            self.request_timeout,
            Repeat::Safe,
            "check_health",
            || {
                let mut health = self.health.clone();
                let request = request.clone();
                async move { health.check(request).await }
            },
        )
        .await
        .map(|response| response.into_inner().status == ServingStatus::Serving as i32)
    }
}

/// An append the server recognises when it is repeated: it has events, all with a non-nil
/// uuid and all matching the condition's query, so a repeat fails the condition on exactly
/// these events and returns their position instead of writing them again.
pub(crate) fn is_idempotent(request: &AppendRequest) -> bool {
    let Some(condition) = &request.condition else {
        return false;
    };
    !request.events.is_empty()
        && request.events.iter().all(|event| {
            event.idempotency_key().is_some() && condition.fail_if_events_match.matches(event)
        })
}

/// An empty query is sent as none: both mean every event, and none is what every server reads
/// that way.
fn wire_query(query: Option<Query>) -> Option<v1::Query> {
    query.filter(|q| !q.items.is_empty()).map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{QueryItem, Uuid};

    fn boundary() -> Query {
        Query::from_items([QueryItem::new(["T"], ["a"])])
    }

    fn request(events: Vec<Event>, condition: Option<AppendCondition>) -> AppendRequest {
        AppendRequest {
            events,
            condition,
            tracking_info: None,
        }
    }

    fn condition() -> Option<AppendCondition> {
        Some(AppendCondition {
            fail_if_events_match: boundary(),
            after: Some(3),
        })
    }

    fn event_with_uuid() -> Event {
        Event::new("T", ["a"], vec![]).with_uuid(Uuid::new_v4())
    }

    #[test]
    fn append_with_uuids_and_a_matching_condition_is_idempotent() {
        assert!(is_idempotent(&request(
            vec![event_with_uuid(), event_with_uuid()],
            condition()
        )));
    }

    #[test]
    fn append_without_condition_is_not_idempotent() {
        assert!(!is_idempotent(&request(vec![event_with_uuid()], None)));
    }

    #[test]
    fn append_with_an_event_without_uuid_is_not_idempotent() {
        let events = vec![event_with_uuid(), Event::new("T", ["a"], vec![])];
        assert!(!is_idempotent(&request(events, condition())));
    }

    #[test]
    fn nil_uuid_counts_as_no_uuid() {
        let events = vec![Event::new("T", ["a"], vec![]).with_uuid(Uuid::nil())];
        assert!(!is_idempotent(&request(events, condition())));
    }

    #[test]
    fn event_outside_the_condition_query_makes_the_append_not_idempotent() {
        // The repeat would pass the condition again and write the event twice.
        let events = vec![Event::new("Other", ["a"], vec![]).with_uuid(Uuid::new_v4())];
        assert!(!is_idempotent(&request(events, condition())));
    }

    #[test]
    fn empty_append_is_not_idempotent() {
        assert!(!is_idempotent(&request(vec![], condition())));
    }

    #[test]
    fn empty_query_is_sent_as_none() {
        assert_eq!(wire_query(Some(Query::all())), None);
        assert_eq!(wire_query(None), None);
        assert!(wire_query(Some(boundary())).is_some());
    }
}
