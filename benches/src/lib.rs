//! UmaDB benchmark tooling: the `umadb-bench` load generator's workloads and reports. The
//! engine's criterion benchmarks are in `benches/core.rs`.

pub mod follow;
pub mod machine;
pub mod report;
pub mod transport;
pub mod workload;
