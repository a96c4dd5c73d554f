//! The `umadb` binary: parse options, start the server, stop it on SIGINT or SIGTERM.

use clap::Parser;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use umadb_server::{ServerConfig, TlsConfig};

/// UmaDB: an event store for Dynamic Consistency Boundaries, served over gRPC (umadb.v1).
///
/// Log verbosity comes from RUST_LOG (default "info"), e.g. RUST_LOG=debug.
#[derive(Parser, Debug)]
#[command(name = "umadb", version, about)]
struct Cli {
    /// Address and port to listen on (port 0 picks a free port)
    #[arg(long, env = "UMADB_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Directory holding the data; created if missing
    #[arg(long, env = "UMADB_DB_PATH", default_value = "./uma.db")]
    db_path: PathBuf,

    /// TLS certificate chain (PEM); requires --tls-key
    #[arg(long, env = "UMADB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); requires --tls-cert
    #[arg(long, env = "UMADB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// API key clients must send as `authorization: Bearer <key>`. Repeat the option (or
    /// separate keys with commas in UMADB_API_KEY) to accept several keys during a rotation
    #[arg(
        long = "api-key",
        env = "UMADB_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
}

impl Cli {
    fn into_config(self) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::new(self.listen, self.db_path);
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert_path), Some(key_path)) => Some(TlsConfig {
                cert_path,
                key_path,
            }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key must be given together".into()),
        };
        config.api_keys = self
            .api_keys
            .into_iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: ServerConfig) -> ExitCode {
    let server = match umadb_server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = stop_signal().await {
        tracing::error!("cannot listen for stop signals: {e}");
    }
    // A second signal during shutdown stops at once; every acknowledged append is already durable.
    tokio::spawn(async {
        if stop_signal().await.is_ok() {
            tracing::warn!("second stop signal: exiting without waiting");
            std::process::exit(1);
        }
    });
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
