"""What concurrent syncs on one token share: where the shared store is, and who may create an audience.

The store is a Redis server the deployment already runs (chosen by :func:`resolve_store_url`). It holds
the token's rate budget (see ``ratelimit.py``) and short-lived creation locks. Keys carry a fingerprint
of the token, never the token. Without a store, or while it is unreachable, everything here degrades to
per-task behaviour and never fails a sync.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

STORE_URL_EXTRA = "rate_budget_url"
"""Connection extra (and ``[tiktok]`` config option) naming the shared store."""
NO_STORE = "none"
"""Value of the setting that turns the shared store off (per-task budgets)."""
STORE_SCHEMES = ("redis://", "rediss://", "unix://")
KEY_PREFIX = "tiktok"
STORE_TIMEOUT_SECONDS = 2.0
"""Socket timeouts for the store: a hung Redis must not stall uploads for long."""


def token_fingerprint(token: str) -> str:
    """A non-reversible, stable name for a token, safe for store keys and logs."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def resolve_store_url(connection_extras: Mapping[str, Any] | None = None) -> str | None:
    """
    The shared store's URL, or None for per-task budgets.

    First match wins: the connection extra ``rate_budget_url``; Airflow config ``[tiktok] rate_budget_url``
    (env ``AIRFLOW__TIKTOK__RATE_BUDGET_URL``); ``[celery] broker_url`` when the executor is Celery and the
    broker is Redis. The value ``none`` in either explicit setting turns the store off.
    """
    from airflow.sdk import conf

    explicit = (connection_extras or {}).get(STORE_URL_EXTRA) or conf.get("tiktok", STORE_URL_EXTRA, fallback=None)
    if explicit:
        return _usable_url(str(explicit).strip())
    if "CeleryExecutor" in (conf.get("core", "executor", fallback="") or ""):
        broker = conf.get("celery", "broker_url", fallback=None)
        if broker and broker.startswith(STORE_SCHEMES):
            return broker
    return None


def _usable_url(url: str) -> str | None:
    if url.lower() == NO_STORE:
        return None
    if not url.startswith(STORE_SCHEMES):
        log.warning("rate_budget_url is not a redis:// URL; using per-task rate budgets.")
        return None
    return url


def redis_options() -> dict[str, Any]:
    """Client options for every store connection: short timeouts, no hidden retry loops."""
    return {
        "socket_timeout": STORE_TIMEOUT_SECONDS,
        "socket_connect_timeout": STORE_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }


def creation_lock_key(token: str, advertiser_id: str, name: str) -> str:
    name_digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}/create-audience/{token_fingerprint(token)}/{advertiser_id}/{name_digest}"


@contextmanager
def creation_lock(
    store_url: str | None,
    token: str,
    advertiser_id: str,
    name: str,
    *,
    timeout: float = 120.0,
    wait: float | None = None,
) -> Iterator[bool]:
    """
    Hold the right to create audience ``name`` while the block runs; yield whether the lock is held.

    Wrap "find by name, create if missing" in it: a second sync waits for the first to finish creating,
    then finds its audience instead of creating a twin. ``timeout`` bounds how long a crashed holder can
    block others; ``wait`` (default: ``timeout``) bounds the wait, after which the block runs unlocked
    (the end state stays one audience, via dedupe). Without a store, or if it fails, the block runs
    unlocked and the sync goes on.
    """
    if store_url is None:
        yield False
        return
    with redis.Redis.from_url(store_url, **redis_options()) as client:
        lock = client.lock(
            creation_lock_key(token, advertiser_id, name),
            timeout=timeout,
            blocking_timeout=timeout if wait is None else wait,
            thread_local=False,
        )
        try:
            held = bool(lock.acquire())
        except redis.RedisError as err:
            log.warning("Audience creation lock unavailable (%s); creating without it.", type(err).__name__)
            held = False
        else:
            if not held:
                log.warning("Audience creation lock still held by another sync; going on without it.")
        try:
            yield held
        finally:
            if held:
                _release(lock)


def _release(lock: redis.lock.Lock) -> None:
    try:
        lock.release()
    except redis.exceptions.LockNotOwnedError:
        log.warning("Audience creation lock expired before release; another sync may have created in parallel.")
    except redis.RedisError as err:
        log.warning("Could not release the audience creation lock (%s); it expires on its own.", type(err).__name__)
