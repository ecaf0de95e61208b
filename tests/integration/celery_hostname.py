"""``[core] hostname_callable`` for the scale-out test: two workers on one host get distinct names."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    name = os.environ.get("TIKTOK_WORKER_NAME")
    return f"{socket.getfqdn()}-{name}" if name else socket.getfqdn()
