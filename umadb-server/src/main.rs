//! The `umadb` binary: serve (the default), `check` a store, or `backup` one.

mod admin;

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use umadb_server::{Limits, ServerConfig, TlsConfig};

// A request's many short-lived allocations (HTTP/2 frames, headers, messages) across the async
// threads cost glibc's allocator a measurable share of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// UmaDB: an event store for Dynamic Consistency Boundaries, served over gRPC (umadb.v1).
///
/// Without a subcommand it serves. Log verbosity comes from RUST_LOG (default "info"),
/// e.g. RUST_LOG=debug.
#[derive(Parser, Debug)]
#[command(name = "umadb", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the store over gRPC (what a bare `umadb` does)
    Serve(ServeArgs),
    /// Verify a whole store: every record's checksum, gapless positions, indexes agreeing with
    /// the events. Safe while a server runs. Exits 0 when clean, 2 when damaged, 1 on other errors
    Check(CheckArgs),
    /// Write a consistent, compacted copy of a store into a new directory. Safe while a server
    /// runs and appends
    Backup(BackupArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
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

    /// Most client connections open at once; further connections are closed at once
    #[arg(long, env = "UMADB_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,

    /// Most concurrent calls (streams) on one connection
    #[arg(long, env = "UMADB_MAX_STREAMS_PER_CONNECTION", default_value_t = Limits::default().max_streams_per_connection)]
    max_streams_per_connection: u32,

    /// Seconds a unary call (Append, Head, GetTrackingInfo) may take before it is answered
    /// with an error; 0 disables the timeout. Streams are not cut
    #[arg(long, env = "UMADB_REQUEST_TIMEOUT", default_value_t = Limits::default().request_timeout.map_or(0, |d| d.as_secs()))]
    request_timeout: u64,

    /// Largest request message accepted, in bytes
    #[arg(long, env = "UMADB_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,

    /// Most events one append may carry
    #[arg(long, env = "UMADB_MAX_EVENTS_PER_APPEND", default_value_t = Limits::default().max_events_per_append)]
    max_events_per_append: usize,

    /// Most events the indexes may trail the log by. Queries match the newest events without
    /// them; a higher lag means fewer index pages written per small commit. 0 indexes every
    /// commit's events at once
    #[arg(long, env = "UMADB_INDEX_LAG", default_value_t = umadb_core::DEFAULT_INDEX_LAG)]
    index_lag: u64,

    /// Verify the whole store (as `umadb check` does) before serving it, and refuse a damaged
    /// one. Takes time in proportion to the store's size
    #[arg(long, env = "UMADB_VERIFY_ON_START")]
    verify_on_start: bool,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Directory of the store to check
    #[arg(long, env = "UMADB_DB_PATH")]
    db_path: PathBuf,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// Directory of the store to copy
    #[arg(long, env = "UMADB_DB_PATH")]
    db_path: PathBuf,

    /// New directory to write the copy into (must not hold a store)
    #[arg(long)]
    to: PathBuf,
}

impl ServeArgs {
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
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_streams_per_connection == 0 {
            return Err("--max-streams-per-connection must be at least 1".into());
        }
        config.limits.max_connections = self.max_connections;
        config.limits.max_streams_per_connection = self.max_streams_per_connection;
        config.limits.request_timeout =
            (self.request_timeout > 0).then(|| Duration::from_secs(self.request_timeout));
        config.limits.max_message_bytes = self.max_message_bytes;
        config.limits.max_events_per_append = self.max_events_per_append;
        config.index_lag = self.index_lag;
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
    let serve = match cli.command {
        None => cli.serve,
        Some(Command::Serve(serve)) => serve,
        Some(Command::Check(args)) => return admin::check(&args.db_path),
        Some(Command::Backup(args)) => return admin::backup(&args.db_path, &args.to),
    };
    if serve.verify_on_start {
        if let Err(e) = admin::verify_before_serving(&serve.db_path) {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let config = match serve.into_config() {
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
