//! UmaDB core: the domain types of a Dynamic Consistency Boundary event store and, with the
//! default `storage` feature, the LMDB storage engine behind the `umadb` server.

mod error;
#[cfg(feature = "storage")]
mod storage;
mod types;

pub use error::{Error, Result};
#[cfg(feature = "storage")]
#[doc(hidden)]
pub use storage::{debug_counters, debug_index_lookups, reset_debug_counters};
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use storage::{stage_crash_of_a_build_before_the_log, stamp_format_version};
#[cfg(feature = "storage")]
pub use storage::{
    CheckReport, JournalReplay, OpeningProgress, PageSummary, ProgressReporter, Reader, Store,
    StoreOptions, DEFAULT_INDEX_LAG, FORMAT_VERSION,
};
pub use types::{
    AppendCondition, AppendRequest, Event, EventRef, Position, Query, QueryItem, ReadRequest,
    SequencedEvent, SequencedEventRef, TrackingInfo, MAX_STRING_LEN,
};
pub use uuid::Uuid;
