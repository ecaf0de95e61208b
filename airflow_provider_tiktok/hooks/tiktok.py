"""TikTokHook: transport, auth, envelope parsing, retries and the Marketing API calls we use."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import urlparse

import aiohttp
import orjson
import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import Connection
from airflow.sdk._shared.secrets_masker import redact
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import (
    NETWORK_ERROR_CODE,
    TikTokAPIError,
    TikTokBadRequestError,
    TikTokConfigurationError,
    TikTokRateLimitError,
    TikTokTransientError,
    error_for_http_status,
    unwrap_envelope,
)
from airflow_provider_tiktok.limits import ID_SCHEMA_DIGEST_LENGTH, MAX_AUDIENCE_NAME_LENGTH, MAX_USERS_PER_MAPPING

PRODUCTION_BASE_URL = "https://business-api.tiktok.com/open_api/v1.3/"

AUDIENCE_PAGE_SIZE = 100
AUDIENCE_GET_CHUNK = 100
OAUTH_ENDPOINTS = frozenset({"oauth2/access_token/", "oauth2/advertiser/get/"})


class RequestGate(Protocol):
    """Anything that blocks until one more request may start (the operator's rate limiter)."""

    def acquire(self) -> None: ...


@dataclass
class CallStats:
    """Thread-safe counters the operator turns into metrics."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, requests: int = 0, retries: int = 0, rate_limited: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.rate_limited += rate_limited


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base_url(host: str | None) -> str:
    """The connection's ``host`` as an API base URL; refuse plain http except on loopback."""
    if not host:
        return PRODUCTION_BASE_URL
    url = host if "://" in host else f"https://{host}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TikTokConfigurationError(f"API base URL {host!r} is not an http(s) URL.")
    if parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
        raise TikTokConfigurationError(
            f"API base URL {host!r} uses plain http on a non-loopback host; use https "
            "(plain http is accepted only for 127.0.0.1/localhost, e.g. the local emulator)."
        )
    return url if url.endswith("/") else url + "/"


class TikTokHook(HttpHook):
    """
    Talk to the TikTok Marketing API (v1.3) with an OAuth access token kept in an Airflow Connection.

    Connection: ``host`` = API base URL (empty means production), ``password`` = access token,
    extras ``app_id``, ``secret`` (app secret, only sent to OAuth endpoints), ``advertiser_id``.

    :param tiktok_conn_id: the ``tiktok`` connection to use.
    :param timeout: (connect, read) seconds for every request.
    :param retry_limit: attempts per call for rate-limited and transient errors.
    :param retry_max_seconds: wall-clock cap for one call's retries.
    :param retry_min_wait: first back-off in seconds (grows exponentially, with jitter).
    :param retry_max_wait: longest single back-off.
    :param pool_maxsize: pooled connections; sized for the operator's worker threads.
    :param request_gate: called before every send (retries included), e.g. a rate limiter.
    """

    conn_name_attr = "tiktok_conn_id"
    default_conn_name = "tiktok_default"
    conn_type = "tiktok"
    hook_name = "TikTok Marketing API"

    def __init__(
        self,
        tiktok_conn_id: str = default_conn_name,
        *,
        timeout: tuple[float, float] = (10.0, 120.0),
        retry_limit: int = 8,
        retry_max_seconds: float = 300.0,
        retry_min_wait: float = 1.0,
        retry_max_wait: float = 60.0,
        pool_maxsize: int = 64,
        request_gate: RequestGate | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=tiktok_conn_id, tcp_keep_alive=False)
        self.tiktok_conn_id = tiktok_conn_id
        self.timeout = timeout
        self.pool_maxsize = pool_maxsize
        self.request_gate = request_gate
        self.stats = CallStats()
        self._connection_override: Connection | None = None
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._retry_args: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(retry_limit) | tenacity.stop_after_delay(retry_max_seconds),
            "wait": tenacity.wait_exponential_jitter(initial=retry_min_wait, max=retry_max_wait),
            "retry": tenacity.retry_if_exception(self._retryable_error),
            "before_sleep": self._count_retry,
            "reraise": True,
        }

    # --- connection form ---------------------------------------------------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        return {
            "app_id": StringField(lazy_gettext("App ID"), widget=BS3TextFieldWidget()),
            "secret": PasswordField(lazy_gettext("App secret"), widget=BS3PasswordFieldWidget()),
            "advertiser_id": StringField(lazy_gettext("Default advertiser ID"), widget=BS3TextFieldWidget()),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL", "password": "Access token"},
            "placeholders": {
                "host": PRODUCTION_BASE_URL,
                "password": "long-lived Marketing API access token",
                "app_id": "TikTok for Business app id (for OAuth and advertiser listing)",
                "secret": "app secret (only sent to OAuth endpoints)",
                "advertiser_id": "ad account used when a task names none",
            },
        }

    # --- connection and session --------------------------------------------------------------

    @classmethod
    def for_base_url(cls, base_url: str | None, access_token: str | None = None, **kwargs: Any) -> TikTokHook:
        """A hook without a stored connection, e.g. for the OAuth command before one exists."""
        hook = cls(**kwargs)
        hook._connection_override = Connection(
            conn_id="tiktok_adhoc", conn_type="tiktok", host=base_url or "", password=access_token
        )
        return hook

    @cached_property
    def connection(self) -> Connection:
        conn = self._connection_override or self.get_connection(self.tiktok_conn_id)
        extras = conn.extra_dejson
        for value in (conn.password, extras.get("secret")):
            if value:
                mask_secret(value)
        return conn

    @cached_property
    def api_base_url(self) -> str:
        return normalise_base_url(self.connection.host)

    @property
    def default_advertiser_id(self) -> str | None:
        value = self.connection.extra_dejson.get("advertiser_id")
        return str(value) if value else None

    def _app_credentials(self) -> tuple[str, str]:
        extras = self.connection.extra_dejson
        app_id, secret = extras.get("app_id"), extras.get("secret")
        if not app_id or not secret:
            raise TikTokConfigurationError(
                f"Connection {self.tiktok_conn_id!r} needs extras 'app_id' and 'secret' for this call."
            )
        return str(app_id), str(secret)

    def _access_token(self) -> str:
        token = self.connection.password
        if not token:
            raise TikTokConfigurationError(
                f"Connection {self.tiktok_conn_id!r} has no access token (the 'password' field). "
                "Run `python -m airflow_provider_tiktok.oauth` to obtain one."
            )
        return token

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None):
        """
        One pooled session per hook, shared by the operator's threads.

        Unlike ``HttpHook.get_conn`` this never copies connection extras into headers (they hold the
        app secret), and never lets an extra turn TLS verification off.
        """
        with self._session_lock:
            if self._session is None:
                session = requests.Session()
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_maxsize, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.verify = True
                session.trust_env = False
                session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
                self.base_url = self.api_base_url
                self._session = session
            return self._session

    def close(self) -> None:
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # --- transport ---------------------------------------------------------------------------

    @staticmethod
    def _retryable_error(exception: BaseException) -> bool:
        return isinstance(exception, TikTokAPIError) and exception.retryable

    def _count_retry(self, retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        self.stats.add(retries=1)
        self.log.warning(
            "TikTok call failed (%s); retry %d in %.1fs",
            error,
            retry_state.attempt_number,
            retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        authenticated: bool = True,
    ) -> dict[str, Any]:
        """Send one API call with retries; return the envelope's ``data`` or raise a typed error."""
        payload = orjson.dumps(body) if body is not None else None
        headers = {"Access-Token": self._access_token()} if authenticated else {}
        retrying = tenacity.Retrying(**self._retry_args)
        return retrying(self._send_once, method, endpoint, params, payload, headers)

    def _send_once(
        self,
        method: str,
        endpoint: str,
        params: dict[str, Any] | None,
        payload: bytes | None,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        session = self.get_conn()
        if self.request_gate is not None:
            self.request_gate.acquire()
        self.stats.add(requests=1)
        try:
            response = session.request(
                method,
                self.api_base_url + endpoint,
                params=params,
                data=payload,
                headers=headers,
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            raise TikTokTransientError(
                NETWORK_ERROR_CODE, f"{type(err).__name__} talking to the API", endpoint=endpoint
            ) from None
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        try:
            return envelope_data(response.status_code, parsed, endpoint)
        except TikTokRateLimitError:
            self.stats.add(rate_limited=1)
            raise

    # --- API methods -------------------------------------------------------------------------

    def get_user_info(self) -> dict[str, Any]:
        """Cheapest call that proves the token works."""
        return self.call("GET", "user/info/")

    def list_advertisers(self) -> list[dict[str, Any]]:
        """Ad accounts the token is authorised for (needs the app id and secret)."""
        app_id, secret = self._app_credentials()
        data = self.call("GET", "oauth2/advertiser/get/", params={"app_id": app_id, "secret": secret})
        return list(data.get("list") or [])

    def exchange_auth_code(self, app_id: str, secret: str, auth_code: str) -> dict[str, Any]:
        """Swap a one-time OAuth ``auth_code`` for a long-lived access token."""
        mask_secret(secret)
        data = self.call(
            "POST",
            "oauth2/access_token/",
            body={"app_id": app_id, "secret": secret, "auth_code": auth_code},
            authenticated=False,
        )
        if data.get("access_token"):
            mask_secret(data["access_token"])
        return data

    def iter_audiences(self, advertiser_id: str) -> Iterator[dict[str, Any]]:
        """Every custom audience of an advertiser, page by page."""
        page = 1
        while True:
            data = self.call(
                "GET",
                "dmp/custom_audience/list/",
                params={"advertiser_id": advertiser_id, "page": page, "page_size": AUDIENCE_PAGE_SIZE},
            )
            yield from data.get("list") or []
            total_pages = int((data.get("page_info") or {}).get("total_page") or 0)
            if page >= total_pages:
                return
            page += 1

    def list_audiences(self, advertiser_id: str) -> list[dict[str, Any]]:
        return list(self.iter_audiences(advertiser_id))

    def get_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Audience details for the given ids, fetched 100 at a time."""
        details: list[dict[str, Any]] = []
        for start in range(0, len(audience_ids), AUDIENCE_GET_CHUNK):
            chunk = [str(a) for a in audience_ids[start : start + AUDIENCE_GET_CHUNK]]
            data = self.call(
                "GET",
                "dmp/custom_audience/get/",
                params={"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps(chunk)},
            )
            details.extend(item.get("audience_details") or {} for item in data.get("list") or [])
        return details

    def find_audience_by_name(self, advertiser_id: str, name: str) -> dict[str, Any] | None:
        """The oldest audience whose name matches exactly, or None."""
        return oldest_named(self.iter_audiences(advertiser_id), name)

    # --- async (triggerer) -------------------------------------------------------------------

    async def afind_audience(
        self, advertiser_id: str, *, audience_id: str | None = None, audience_name: str | None = None
    ) -> dict[str, Any] | None:
        """One audience by id, or the oldest with this exact name; None when there is none. No retries:
        the sensor treats a retryable error as "not yet" and polls again."""
        connection = await self.aget_connection(self.tiktok_conn_id)
        token = connection.password
        if not token:
            raise TikTokConfigurationError(f"Connection {self.tiktok_conn_id!r} has no access token.")
        mask_secret(token)
        base_url = normalise_base_url(connection.host)
        timeout = aiohttp.ClientTimeout(sock_connect=self.timeout[0], sock_read=self.timeout[1])
        async with aiohttp.ClientSession(
            base_url=base_url, headers={"Access-Token": token}, timeout=timeout, trust_env=False
        ) as session:
            if audience_id:
                params = {"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps([str(audience_id)])}
                try:
                    data = await _aget(session, "dmp/custom_audience/get/", params)
                except TikTokBadRequestError:
                    return None  # TikTok answers 40002 for an id it does not know
                found = [item.get("audience_details") or {} for item in data.get("list") or []]
                return found[0] if found else None
            audiences: list[dict[str, Any]] = []
            page, total_pages = 1, 1
            while page <= total_pages:
                params = {"advertiser_id": advertiser_id, "page": page, "page_size": AUDIENCE_PAGE_SIZE}
                data = await _aget(session, "dmp/custom_audience/list/", params)
                audiences.extend(data.get("list") or [])
                total_pages = int((data.get("page_info") or {}).get("total_page") or 0)
                page += 1
            return oldest_named(audiences, str(audience_name))

    def create_audience(self, advertiser_id: str, name: str) -> str:
        if not name or len(name) > MAX_AUDIENCE_NAME_LENGTH:
            raise TikTokConfigurationError(
                f"Audience name must be 1-{MAX_AUDIENCE_NAME_LENGTH} characters (TikTok cuts longer ones, "
                f"which would break finding it again by name); got {len(name or '')}."
            )
        data = self.call(
            "POST",
            "segment/audience/",
            body={"advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name},
        )
        return str(data["audience_id"])

    def delete_audience(self, advertiser_id: str, audience_id: str) -> None:
        self.call(
            "POST",
            "segment/audience/",
            body={"advertiser_id": advertiser_id, "action": "delete", "delete_audience_id": [audience_id]},
        )

    def add_users(
        self,
        advertiser_id: str,
        audience_ids: Sequence[str],
        id_schema: Sequence[str],
        batch_data: Sequence[Sequence[dict[str, Any]]],
    ) -> None:
        """Add up to 10,000 hashed users; ``batch_data`` rows align with ``id_schema`` (``{}`` = missing)."""
        self._map_users("add", advertiser_id, audience_ids, id_schema, batch_data)

    def remove_users(
        self,
        advertiser_id: str,
        audience_ids: Sequence[str],
        id_schema: Sequence[str],
        batch_data: Sequence[Sequence[dict[str, Any]]],
    ) -> None:
        self._map_users("delete", advertiser_id, audience_ids, id_schema, batch_data)

    def map_batch(self, action: str, advertiser_id: str, audience_ids: Sequence[str], batch: UserBatch) -> None:
        """Send a prepared batch (``action`` add or delete); its JSON is built by Arrow, not row by row."""
        if len(batch) > MAX_USERS_PER_MAPPING:
            raise TikTokBadRequestError(40061, f"batch {batch.number} has {len(batch)} users; the limit is 10000")
        self._post_mapping(action, advertiser_id, batch.id_schema, orjson.Fragment(batch.batch_data_json(audience_ids)))

    def _map_users(
        self,
        action: str,
        advertiser_id: str,
        audience_ids: Sequence[str],
        id_schema: Sequence[str],
        batch_data: Sequence[Sequence[dict[str, Any]]],
    ) -> None:
        check_mapping_payload(id_schema, batch_data)
        if not audience_ids:
            raise TikTokConfigurationError("A mapping call needs at least one audience id.")
        self._post_mapping(action, advertiser_id, id_schema, batch_data)

    def _post_mapping(self, action: str, advertiser_id: str, id_schema: Sequence[str], batch_data: Any) -> None:
        body = {
            "advertiser_ids": [advertiser_id],
            "action": action,
            "id_schema": list(id_schema),
            "batch_data": batch_data,
        }
        self.call("POST", "segment/mapping/", body=body)

    # --- Airflow UI ------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_user_info()
            advertiser = self.default_advertiser_id
            extras = self.connection.extra_dejson
            if extras.get("app_id") and extras.get("secret"):
                listed = ", ".join(
                    f"{a.get('advertiser_id')} ({a.get('advertiser_name', '')})" for a in self.list_advertisers()
                )
                return True, f"Token works; advertisers: {listed or 'none authorised'}"
            return True, f"Token works; advertisers: {advertiser or 'not listed (set app_id and secret)'}"
        except TikTokAPIError as err:
            return False, str(err)
        except TikTokConfigurationError as err:
            return False, str(err)


def oldest_named(audiences: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Among audiences with exactly this name, the oldest (so concurrent creators agree on one)."""
    matches = [a for a in audiences if a.get("name") == name]
    if not matches:
        return None
    return min(matches, key=lambda a: (a.get("create_time") or "", str(a.get("audience_id"))))


async def _aget(session: aiohttp.ClientSession, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        async with session.get(endpoint, params=params) as response:
            status = response.status
            try:
                parsed = await response.json(content_type=None)
            except ValueError:
                parsed = None
    except (aiohttp.ClientError, TimeoutError) as err:
        raise TikTokTransientError(
            NETWORK_ERROR_CODE, f"{type(err).__name__} talking to the API", endpoint=endpoint
        ) from None
    return envelope_data(status, parsed, endpoint)


def envelope_data(status: int, parsed: object, endpoint: str) -> dict[str, Any]:
    """A response's ``data``, or its typed error; the one place both transports classify answers."""
    if status >= 400 and not (isinstance(parsed, dict) and "code" in parsed):
        raise error_for_http_status(status, endpoint)
    try:
        data, _ = unwrap_envelope(parsed, endpoint=endpoint, http_status=status)
    except TikTokAPIError as err:
        err.message = redact(err.message)  # TikTok may echo what it was sent, secret included
        raise
    return data


def check_mapping_payload(id_schema: Sequence[str], batch_data: Sequence[Sequence[Any]]) -> None:
    """Client-side guard: TikTok rejects these anyway, but only after a wasted (rate-limited) request."""
    unknown = [s for s in id_schema if s not in ID_SCHEMA_DIGEST_LENGTH]
    if unknown or not id_schema:
        raise TikTokBadRequestError(40002, f"unknown or empty id_schema {unknown or list(id_schema)}")
    if len(set(id_schema)) != len(id_schema):
        raise TikTokBadRequestError(40002, f"id_schema has duplicates: {list(id_schema)}")
    if len(batch_data) > MAX_USERS_PER_MAPPING:
        raise TikTokBadRequestError(
            40061, f"{len(batch_data)} users in one request; the limit is {MAX_USERS_PER_MAPPING}"
        )
    for position, row in enumerate(batch_data):
        if len(row) != len(id_schema):
            raise TikTokBadRequestError(
                40002, f"batch_data row {position} has {len(row)} ids for {len(id_schema)} id_schema entries"
            )
