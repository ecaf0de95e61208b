"""Start the emulator: ``python -m airflow_provider_tiktok.sandbox --port 8765 --state sandbox.db``."""

from __future__ import annotations

import argparse
import json
import socket
import sys

import uvicorn

from airflow_provider_tiktok.sandbox.app import API_PREFIX, Faults, create_app
from airflow_provider_tiktok.sandbox.faults import DROP_MODES
from airflow_provider_tiktok.sandbox.settings import MAPPING_MODES, EmulatorSettings
from airflow_provider_tiktok.sandbox.state import SandboxState

DEFAULT_TOKEN = "sandbox-access-token"
DEFAULT_ADVERTISER = "7000000000001"
DEFAULT_APP_ID = "sandbox-app"
DEFAULT_SECRET = "sandbox-app-secret"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_tiktok.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", default="tiktok-sandbox.db", help="SQLite file that keeps all state")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--advertiser-id", action="append", dest="advertiser_ids")
    parser.add_argument("--app-id", default=DEFAULT_APP_ID)
    parser.add_argument("--secret", default=DEFAULT_SECRET)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--transient-error-rate", type=float, default=0.0)
    parser.add_argument("--drop-connection-rate", type=float, default=0.0)
    parser.add_argument("--drop-mode", choices=DROP_MODES, default="mid_body", help="where a dropped answer is cut")
    parser.add_argument("--valid-after-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None, help="seed for injected faults")
    defaults = EmulatorSettings()
    parser.add_argument(
        "--mapping-mode",
        choices=MAPPING_MODES,
        default=defaults.mapping_mode,
        help="sink: check segment/mapping bodies, count their users, store no member (benchmarks)",
    )
    parser.add_argument("--min-audience-size", type=int, default=defaults.min_audience_size)
    parser.add_argument("--min-lookalike-seed", type=int, default=defaults.min_lookalike_seed)
    parser.add_argument("--max-file-bytes", type=int, default=defaults.max_file_bytes)
    parser.add_argument("--accept-gzip-files", type=_boolean, default=defaults.accept_gzip_files)
    parser.add_argument(
        "--business-center",
        action="append",
        dest="business_centers",
        default=[],
        help="comma-separated advertiser ids of one Business Center (repeat for more); "
        "default: the token's advertisers form one",
    )
    return parser.parse_args(argv)


def _boolean(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() in ("true", "1", "yes")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not port_is_free(args.host, args.port):
        print(
            f"Port {args.port} on {args.host} is already in use; pass --port with a free one.",
            file=sys.stderr,
        )
        return 2
    advertisers = args.advertiser_ids or [DEFAULT_ADVERTISER]
    state = SandboxState(args.state)
    state.seed(args.app_id, args.secret, args.token, advertisers)
    faults = Faults(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        transient_error_rate=args.transient_error_rate,
        drop_connection_rate=args.drop_connection_rate,
        drop_mode=args.drop_mode,
        valid_after_seconds=args.valid_after_seconds,
    )
    settings = EmulatorSettings(
        mapping_mode=args.mapping_mode,
        min_audience_size=args.min_audience_size,
        min_lookalike_seed=args.min_lookalike_seed,
        max_file_bytes=args.max_file_bytes,
        accept_gzip_files=args.accept_gzip_files,
        business_centers=tuple(frozenset(filter(None, c.split(","))) for c in args.business_centers),
    )
    base_url = f"http://{args.host}:{args.port}{API_PREFIX}"
    print(
        json.dumps(
            {
                "base_url": base_url,
                "access_token": args.token,
                "advertiser_ids": advertisers,
                "app_id": args.app_id,
            }
        ),
        flush=True,
    )
    config = uvicorn.Config(
        create_app(state, faults, seed=args.seed, settings=settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=256,
    )
    # Hand the GIL back to the event loop every millisecond while a mapping body is parsed, so
    # arrivals are stamped within ~1 ms of reaching the server (the default is 5 ms).
    sys.setswitchinterval(0.001)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
