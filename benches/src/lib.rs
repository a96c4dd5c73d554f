//! UmaDB benchmark tooling: the `umadb-bench` load generator's workloads and reports. The
//! engine's criterion benchmarks are in `benches/core.rs`.

/// Connects to a target, or returns from the calling client function with the failure as its
/// whole tally.
macro_rules! connect_or_fail {
    ($target:expr) => {
        match $target.connect().await {
            Ok(client) => client,
            Err(e) => return crate::workload::Tally::failed(e),
        }
    };
}

pub mod follow;
pub mod machine;
pub mod report;
pub mod transport;
pub mod workload;
