//! The server, embedded so that the wheel's `umadb` console script runs it (`python/umadb/
//! _server.py` parses the command line). It runs on the process's tokio runtime until a signal
//! handler raises (Ctrl-C, or SIGTERM as installed by the script), then stops gracefully.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use umadb_server::{ServerConfig, TlsConfig};

use crate::errors::invalid_argument;
use crate::wait::wait_for;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Serves until interrupted, then shuts down gracefully. Returns normally after a graceful
/// stop; raises `RuntimeError` if the server cannot start or stop cleanly.
#[pyfunction]
#[pyo3(signature = (listen, db_path, tls_cert=None, tls_key=None, api_keys=Vec::new()))]
fn run_server(
    py: Python<'_>,
    listen: &str,
    db_path: PathBuf,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    api_keys: Vec<String>,
) -> PyResult<()> {
    let listen: SocketAddr = listen.parse().map_err(|e| {
        invalid_argument(format!(
            "invalid listen address {listen:?} (expected IP:PORT): {e}"
        ))
    })?;
    let mut config = ServerConfig::new(listen, db_path);
    config.tls = match (tls_cert, tls_key) {
        (Some(cert_path), Some(key_path)) => Some(TlsConfig {
            cert_path,
            key_path,
        }),
        (None, None) => None,
        _ => {
            return Err(invalid_argument(
                "--tls-cert and --tls-key must be given together",
            ))
        }
    };
    config.api_keys = api_keys
        .into_iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    init_logging();
    let server = wait_for(py, umadb_server::start(config))?
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    // Serves until a signal handler raises; the exception is the request to stop.
    let _stop = wait_for(py, std::future::pending::<()>());
    wait_for(py, server.shutdown())?.map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(run_server, module)?)
}
