//! The native module of the `umadb` Python package (`umadb._umadb`; `python/umadb/__init__.py`
//! re-exports it). It wraps the Rust client of `umadb-client`:
//!
//! - `types`: the value types (`Event`, `Query`, ...), wrapping those of `umadb-core`;
//! - `errors`: the exception hierarchy and the one mapping from `umadb_core::Error`;
//! - `connection`, `feed`: what `Client` and `AsyncClient` share — a lazily opened connection
//!   and the batched event streams of reads and subscriptions;
//! - `client`: the blocking `Client` (GIL released, Ctrl-C interruptible, via `wait`);
//! - `aio`: the asyncio `AsyncClient`, over `bridge` (tokio tasks completing asyncio futures,
//!   kept out of Python once the interpreter exits);
//! - `server`: the embedded server behind the `umadb` console script.

mod aio;
mod args;
mod bridge;
mod client;
mod connection;
mod errors;
mod feed;
#[cfg(feature = "server")]
mod server;
mod types;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _umadb(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    types::register(module)?;
    client::register(module)?;
    aio::register(module)?;
    bridge::register(module)?;
    #[cfg(feature = "server")]
    server::register(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
