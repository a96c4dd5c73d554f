//! Shared helpers for the UmaDB benchmarks.
