//! Domain types shared by the engine, the server, the clients and the Python package.

use crate::error::{Error, Result};
use uuid::Uuid;

/// Position of an event in the global log. The first event is at 1; 0 never names an event.
pub type Position = u64;

/// Longest event type, tag, metadata key or value, tracking source: 65,535 bytes.
pub const MAX_STRING_LEN: usize = 65_535;

/// An event as submitted by an application.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event_type: String,
    pub tags: Vec<String>,
    pub data: Vec<u8>,
    /// `None` when the event has no uuid. The nil uuid is stored as given but never used as an
    /// idempotency key.
    pub uuid: Option<Uuid>,
    /// Metadata entries in the order given.
    pub metadata: Vec<(String, String)>,
}

impl Event {
    /// An event with a type, tags and data, and no uuid or metadata.
    ///
    /// ```
    /// let e = umadb_core::Event::new("CourseDefined", ["course:c1"], b"{}".to_vec());
    /// assert_eq!(e.tags, vec!["course:c1".to_string()]);
    /// ```
    pub fn new<T: Into<String>>(
        event_type: impl Into<String>,
        tags: impl IntoIterator<Item = T>,
        data: Vec<u8>,
    ) -> Self {
        Event {
            event_type: event_type.into(),
            tags: tags.into_iter().map(Into::into).collect(),
            data,
            uuid: None,
            metadata: Vec::new(),
        }
    }

    /// The same event with a uuid, for idempotent retries.
    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// The uuid if it can serve as an idempotency key (present and not nil).
    pub fn idempotency_key(&self) -> Option<Uuid> {
        self.uuid.filter(|u| !u.is_nil())
    }

    /// Checks the size limits of DESIGN.md.
    pub fn validate(&self) -> Result<()> {
        check_len("event type", &self.event_type)?;
        for tag in &self.tags {
            check_len("tag", tag)?;
        }
        for (key, value) in &self.metadata {
            check_len("metadata key", key)?;
            check_len("metadata value", value)?;
        }
        Ok(())
    }
}

pub(crate) fn check_len(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_STRING_LEN {
        return Err(Error::InvalidArgument(format!(
            "{what} is {} bytes long; the limit is {MAX_STRING_LEN} bytes",
            s.len()
        )));
    }
    Ok(())
}

/// An event as recorded, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedEvent {
    pub position: Position,
    pub event: Event,
    /// The tracking info given with the append that wrote this event.
    pub tracking_info: Option<TrackingInfo>,
}

/// An event borrowed from where it is stored or held: what a read hands to a visitor, so that
/// a server can encode it for the wire without copying it into an [`Event`] first.
///
/// ```
/// let event = umadb_core::Event::new("CourseDefined", ["course:c1"], b"{}".to_vec());
/// let borrowed = umadb_core::EventRef::from(&event);
/// assert_eq!(borrowed.tags, ["course:c1"]);
/// assert_eq!(borrowed.to_event(), event);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub event_type: &'a str,
    pub tags: Vec<&'a str>,
    pub data: &'a [u8],
    pub uuid: Option<Uuid>,
    pub metadata: Vec<(&'a str, &'a str)>,
}

impl EventRef<'_> {
    /// The event, copied out.
    pub fn to_event(&self) -> Event {
        Event {
            event_type: self.event_type.to_owned(),
            tags: self.tags.iter().map(|&t| t.to_owned()).collect(),
            data: self.data.to_vec(),
            uuid: self.uuid,
            metadata: self
                .metadata
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

impl<'a> From<&'a Event> for EventRef<'a> {
    fn from(e: &'a Event) -> Self {
        EventRef {
            event_type: &e.event_type,
            tags: e.tags.iter().map(String::as_str).collect(),
            data: &e.data,
            uuid: e.uuid,
            metadata: e
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }
}

/// A recorded event borrowed for the length of a read's visit (see [`EventRef`]).
///
/// ```
/// use umadb_core::{AppendRequest, Event, Query, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path().join("db")).unwrap();
/// store
///     .append(AppendRequest {
///         events: vec![Event::new("Registered", ["student:1"], b"{}".to_vec())],
///         ..Default::default()
///     })
///     .unwrap();
/// let mut types = Vec::new();
/// let (count, last) = store
///     .read_range_with(&Query::all(), 1, 10, 100, |e| {
///         types.push(format!("{}@{}", e.event.event_type, e.position))
///     })
///     .unwrap();
/// assert_eq!((count, last, types), (1, Some(1), vec!["Registered@1".to_string()]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedEventRef<'a> {
    pub position: Position,
    pub event: EventRef<'a>,
    pub tracking_info: Option<&'a TrackingInfo>,
}

impl SequencedEventRef<'_> {
    /// The event, copied out.
    pub fn to_sequenced(&self) -> SequencedEvent {
        SequencedEvent {
            position: self.position,
            event: self.event.to_event(),
            tracking_info: self.tracking_info.cloned(),
        }
    }
}

impl<'a> From<&'a SequencedEvent> for SequencedEventRef<'a> {
    fn from(e: &'a SequencedEvent) -> Self {
        SequencedEventRef {
            position: e.position,
            event: (&e.event).into(),
            tracking_info: e.tracking_info.as_ref(),
        }
    }
}

/// Matches an event when (`types` is empty or the event's type is one of them) and every tag in
/// `tags` is among the event's tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryItem {
    pub types: Vec<String>,
    pub tags: Vec<String>,
}

impl QueryItem {
    pub fn new<A: Into<String>, B: Into<String>>(
        types: impl IntoIterator<Item = A>,
        tags: impl IntoIterator<Item = B>,
    ) -> Self {
        QueryItem {
            types: types.into_iter().map(Into::into).collect(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.matches_keys(&event.event_type, &event.tags)
    }

    /// Whether an event of this type carrying these tags matches.
    pub fn matches_keys(&self, event_type: &str, tags: &[impl AsRef<str>]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self
                .tags
                .iter()
                .all(|t| tags.iter().any(|have| have.as_ref() == t))
    }
}

/// A list of items, OR-ed. An empty query matches every event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub items: Vec<QueryItem>,
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Self {
        Query::default()
    }

    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Query {
            items: items.into_iter().collect(),
        }
    }

    /// Whether `event` matches, evaluated directly on the event. The engine evaluates queries
    /// on its indexes; this form serves events not yet indexed and tests.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_keys(&event.event_type, &event.tags)
    }

    /// Whether an event of this type carrying these tags matches.
    pub fn matches_keys(&self, event_type: &str, tags: &[impl AsRef<str>]) -> bool {
        self.items.is_empty()
            || self
                .items
                .iter()
                .any(|item| item.matches_keys(event_type, tags))
    }

    pub fn validate(&self) -> Result<()> {
        for item in &self.items {
            for t in &item.types {
                check_len("query type", t)?;
            }
            for t in &item.tags {
                check_len("query tag", t)?;
            }
        }
        Ok(())
    }
}

/// Fail the append if any event matching `fail_if_events_match` has a position after `after`
/// (any position when `after` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendCondition {
    pub fail_if_events_match: Query,
    pub after: Option<Position>,
}

/// The position an event processor has reached in an upstream `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackingInfo {
    pub source: String,
    pub position: Position,
}

/// Everything one append carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendRequest {
    pub events: Vec<Event>,
    pub condition: Option<AppendCondition>,
    pub tracking_info: Option<TrackingInfo>,
}

impl AppendRequest {
    pub fn validate(&self) -> Result<()> {
        for event in &self.events {
            event.validate()?;
        }
        if let Some(condition) = &self.condition {
            condition.fail_if_events_match.validate()?;
        }
        if let Some(tracking) = &self.tracking_info {
            check_len("tracking source", &tracking.source)?;
        }
        Ok(())
    }
}

/// What a read asks for. `start` is inclusive; `None` means from the beginning (forward) or the
/// end (backwards).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadRequest {
    pub query: Query,
    pub start: Option<Position>,
    pub backwards: bool,
    pub limit: Option<u64>,
}
