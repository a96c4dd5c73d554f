"""The ``umadb`` command: runs the UmaDB server embedded in this package.

The options match those of the ``umadb`` binary built from the Rust workspace, and so do
their environment variables (``UMADB_LISTEN``, ``UMADB_DB_PATH``, ``UMADB_TLS_CERT``,
``UMADB_TLS_KEY``, ``UMADB_API_KEY``). Ctrl-C or SIGTERM stops the server gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from umadb import _umadb


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="umadb",
        description=(
            "UmaDB: an event store for Dynamic Consistency Boundaries, served over gRPC "
            "(umadb.v1). Log verbosity comes from RUST_LOG (default 'info')."
        ),
    )
    parser.add_argument(
        "--listen",
        default=env("UMADB_LISTEN", "127.0.0.1:50051"),
        help="address and port to listen on; port 0 picks a free port "
        "(env UMADB_LISTEN, default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--db-path",
        default=env("UMADB_DB_PATH", "./uma.db"),
        help="directory holding the data; created if missing (env UMADB_DB_PATH, default ./uma.db)",
    )
    parser.add_argument(
        "--tls-cert",
        default=env("UMADB_TLS_CERT"),
        help="TLS certificate chain (PEM); requires --tls-key (env UMADB_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        default=env("UMADB_TLS_KEY"),
        help="TLS private key (PEM); requires --tls-cert (env UMADB_TLS_KEY)",
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="API key clients must send as 'authorization: Bearer <key>'; repeat it to accept "
        "several keys (env UMADB_API_KEY, keys separated by commas)",
    )
    parser.add_argument("--version", action="version", version=f"umadb {_umadb.__version__}")
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    api_keys: list[str] = args.api_keys or [
        key for key in os.environ.get("UMADB_API_KEY", "").split(",") if key.strip()
    ]
    if (args.tls_cert is None) != (args.tls_key is None):
        sys.exit("umadb: --tls-cert and --tls-key must be given together")
    # Ctrl-C and SIGTERM stop the server gracefully, even when started with SIGINT ignored
    # (as background jobs of a script are).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    try:
        _umadb.run_server(
            args.listen, args.db_path, args.tls_cert, args.tls_key, api_keys
        )
    except (RuntimeError, ValueError) as error:
        sys.exit(f"umadb: {error}")
    except KeyboardInterrupt:
        # A second signal interrupted the graceful shutdown.
        sys.exit(1)


if __name__ == "__main__":
    main()
