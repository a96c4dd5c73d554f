//! The `umadb.v1` wire protocol: code generated from `umadb/v1/umadb.proto`, the conversions
//! between wire messages and the domain types of `umadb-core`, and the one mapping between
//! [`umadb_core::Error`] and gRPC statuses (used by the server to send and the client to decode).
//! Also the socket wrapper both ends write HTTP/2 through ([`coalesce`]).

pub mod borrowed;
pub mod coalesce;

#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("umadb.v1");
}

use prost::Message;
use tonic::{Code, Status};
use umadb_core as core;
use v1::error_response::ErrorType;

/// Wire event to domain event. An invalid uuid text is an invalid argument.
impl TryFrom<v1::Event> for core::Event {
    type Error = core::Error;

    fn try_from(e: v1::Event) -> Result<Self, Self::Error> {
        let uuid = if e.uuid.is_empty() {
            None
        } else {
            Some(core::Uuid::parse_str(&e.uuid).map_err(|err| {
                core::Error::InvalidArgument(format!(
                    "event uuid {:?} is not a valid UUID: {err}",
                    truncate(&e.uuid)
                ))
            })?)
        };
        Ok(core::Event {
            event_type: e.event_type,
            tags: e.tags,
            data: e.data,
            uuid,
            metadata: e.metadata.into_iter().map(|m| (m.key, m.value)).collect(),
        })
    }
}

impl From<core::Event> for v1::Event {
    fn from(e: core::Event) -> Self {
        v1::Event {
            event_type: e.event_type,
            tags: e.tags,
            data: e.data,
            uuid: e
                .uuid
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_default(),
            metadata: e
                .metadata
                .into_iter()
                .map(|(key, value)| v1::MetadataEntry { key, value })
                .collect(),
        }
    }
}

impl From<v1::QueryItem> for core::QueryItem {
    fn from(item: v1::QueryItem) -> Self {
        core::QueryItem {
            types: item.types,
            tags: item.tags,
        }
    }
}

impl From<core::QueryItem> for v1::QueryItem {
    fn from(item: core::QueryItem) -> Self {
        v1::QueryItem {
            types: item.types,
            tags: item.tags,
        }
    }
}

impl From<v1::Query> for core::Query {
    fn from(q: v1::Query) -> Self {
        core::Query {
            items: q.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<core::Query> for v1::Query {
    fn from(q: core::Query) -> Self {
        v1::Query {
            items: q.items.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<v1::TrackingInfo> for core::TrackingInfo {
    fn from(t: v1::TrackingInfo) -> Self {
        core::TrackingInfo {
            source: t.source,
            position: t.position,
        }
    }
}

impl From<core::TrackingInfo> for v1::TrackingInfo {
    fn from(t: core::TrackingInfo) -> Self {
        v1::TrackingInfo {
            source: t.source,
            position: t.position,
        }
    }
}

impl From<v1::AppendCondition> for core::AppendCondition {
    fn from(c: v1::AppendCondition) -> Self {
        core::AppendCondition {
            fail_if_events_match: c.fail_if_events_match.map(Into::into).unwrap_or_default(),
            after: c.after,
        }
    }
}

impl From<core::AppendCondition> for v1::AppendCondition {
    fn from(c: core::AppendCondition) -> Self {
        v1::AppendCondition {
            fail_if_events_match: Some(c.fail_if_events_match.into()),
            after: c.after,
        }
    }
}

impl TryFrom<v1::AppendRequest> for core::AppendRequest {
    type Error = core::Error;

    fn try_from(r: v1::AppendRequest) -> Result<Self, Self::Error> {
        Ok(core::AppendRequest {
            events: r
                .events
                .into_iter()
                .map(core::Event::try_from)
                .collect::<Result<_, _>>()?,
            condition: r.condition.map(Into::into),
            tracking_info: r.tracking_info.map(Into::into),
        })
    }
}

impl From<core::AppendRequest> for v1::AppendRequest {
    fn from(r: core::AppendRequest) -> Self {
        v1::AppendRequest {
            events: r.events.into_iter().map(Into::into).collect(),
            condition: r.condition.map(Into::into),
            tracking_info: r.tracking_info.map(Into::into),
        }
    }
}

impl From<core::SequencedEvent> for v1::SequencedEvent {
    fn from(e: core::SequencedEvent) -> Self {
        v1::SequencedEvent {
            position: e.position,
            event: Some(e.event.into()),
            tracking_info: e.tracking_info.map(Into::into),
        }
    }
}

impl TryFrom<v1::SequencedEvent> for core::SequencedEvent {
    type Error = core::Error;

    fn try_from(e: v1::SequencedEvent) -> Result<Self, Self::Error> {
        let event = e.event.ok_or_else(|| {
            core::Error::Serialization(format!(
                "sequenced event at position {} carries no event",
                e.position
            ))
        })?;
        Ok(core::SequencedEvent {
            position: e.position,
            event: event.try_into()?,
            tracking_info: e.tracking_info.map(Into::into),
        })
    }
}

/// The gRPC status for an error, with an encoded `ErrorResponse` in its details.
pub fn status_from_error(error: &core::Error) -> Status {
    let (code, error_type) = match error {
        core::Error::Integrity(_) => (Code::FailedPrecondition, ErrorType::Integrity),
        core::Error::InvalidArgument(_) => (Code::InvalidArgument, ErrorType::InvalidArgument),
        core::Error::Authentication(_) => (Code::Unauthenticated, ErrorType::Authentication),
        core::Error::Corruption(_) => (Code::DataLoss, ErrorType::Corruption),
        core::Error::Io(_) => (Code::Internal, ErrorType::Io),
        core::Error::Serialization(_) => (Code::InvalidArgument, ErrorType::Serialization),
        core::Error::Transport(_) => (Code::Unavailable, ErrorType::Io),
        core::Error::Cancelled(_) => (Code::Cancelled, ErrorType::Internal),
        core::Error::Internal(_) => (Code::Internal, ErrorType::Internal),
    };
    with_error_response(code, error_type, error.message())
}

/// A status with `message`, its `ErrorResponse` in the details.
fn with_error_response(code: Code, error_type: ErrorType, message: &str) -> Status {
    let details = v1::ErrorResponse {
        message: message.to_string(),
        error_type: error_type as i32,
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// The status for a call the server stopped waiting for at its deadline (the server's request
/// timeout, or the client's `grpc-timeout` when shorter): DEADLINE_EXCEEDED, with an
/// `ErrorResponse` of type IO. What the call started may still complete afterwards.
pub fn deadline_exceeded(message: &str) -> Status {
    with_error_response(Code::DeadlineExceeded, ErrorType::Io, message)
}

/// The error a status stands for: from its `ErrorResponse` details when present, otherwise from
/// its code (statuses made by the transport itself carry no details). Type IO stands for both a
/// failure of the server's disk (INTERNAL) and a condition of the connection that may pass
/// (UNAVAILABLE: the server is shutting down; DEADLINE_EXCEEDED): the code tells them apart.
pub fn error_from_status(status: &Status) -> core::Error {
    if let Ok(details) = v1::ErrorResponse::decode(status.details()) {
        if !status.details().is_empty() {
            let message = details.message;
            return match ErrorType::try_from(details.error_type) {
                Ok(ErrorType::Integrity) => core::Error::Integrity(message),
                Ok(ErrorType::InvalidArgument) => core::Error::InvalidArgument(message),
                Ok(ErrorType::Authentication) => core::Error::Authentication(message),
                Ok(ErrorType::Corruption) => core::Error::Corruption(message),
                Ok(ErrorType::Io)
                    if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) =>
                {
                    core::Error::Transport(message)
                }
                Ok(ErrorType::Io) => core::Error::Io(message),
                Ok(ErrorType::Serialization) => core::Error::Serialization(message),
                Ok(ErrorType::Internal) | Err(_) => core::Error::Internal(message),
            };
        }
    }
    let message = status.message().to_string();
    match status.code() {
        Code::FailedPrecondition => core::Error::Integrity(message),
        Code::InvalidArgument | Code::OutOfRange => core::Error::InvalidArgument(message),
        Code::Unauthenticated | Code::PermissionDenied => core::Error::Authentication(message),
        Code::DataLoss => core::Error::Corruption(message),
        Code::Cancelled => core::Error::Cancelled(message),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => {
            core::Error::Transport(message)
        }
        _ => core::Error::Internal(message),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_survives_a_status_round_trip() {
        let errors = [
            core::Error::Integrity("condition failed".into()),
            core::Error::InvalidArgument("tag too long".into()),
            core::Error::Authentication("bad key".into()),
            core::Error::Corruption("bad checksum".into()),
            core::Error::Io("disk full".into()),
            core::Error::Transport("shutting down".into()),
            core::Error::Serialization("not a message".into()),
            core::Error::Internal("bug".into()),
        ];
        for error in errors {
            assert_eq!(error_from_status(&status_from_error(&error)), error);
        }
    }

    #[test]
    fn a_call_past_its_deadline_is_a_transport_error_not_a_disk_failure() {
        let status = deadline_exceeded("not answered in time");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let details = v1::ErrorResponse::decode(status.details()).expect("details decode");
        assert_eq!(details.error_type, ErrorType::Io as i32);
        assert_eq!(
            error_from_status(&status),
            core::Error::Transport("not answered in time".into())
        );
    }

    #[test]
    fn integrity_maps_to_failed_precondition() {
        let status = status_from_error(&core::Error::Integrity("x".into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = v1::ErrorResponse::decode(status.details()).expect("details decode");
        assert_eq!(details.error_type, ErrorType::Integrity as i32);
    }

    #[test]
    fn invalid_uuid_text_is_invalid_argument() {
        let event = v1::Event {
            uuid: "not-a-uuid".into(),
            ..Default::default()
        };
        assert!(matches!(
            core::Event::try_from(event),
            Err(core::Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn event_round_trips_through_the_wire_type() {
        let event = core::Event {
            event_type: "T".into(),
            tags: vec!["a".into()],
            data: vec![0, 255],
            uuid: Some(core::Uuid::from_u128(7)),
            metadata: vec![("k".into(), "v".into())],
        };
        let wire: v1::Event = event.clone().into();
        assert_eq!(core::Event::try_from(wire).expect("valid"), event);
    }
}
