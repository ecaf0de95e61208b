"""TikTokHook: transport (URL checks, TLS, pooled sessions, retries, typed errors) and the TikTok concepts a task
needs — the default ad account, the token's access check, audiences by id or exact name, created once."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import mimetypes
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import certifi
import orjson
import requests
import tenacity
from airflow.sdk import BaseHook, Connection
from airflow.sdk._shared.secrets_masker import redact
from airflow.sdk.log import mask_secret
from requests.adapters import HTTPAdapter

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import (
    NETWORK_ERROR_CODE,
    TLS_ERROR_CODE,
    TikTokAPIError,
    TikTokAudienceDeletedError,
    TikTokBadRequestError,
    TikTokConfigurationError,
    TikTokPermissionError,
    TikTokRateLimitError,
    TikTokTLSError,
    TikTokTransientError,
    error_for_http_status,
    unwrap_envelope,
)
from airflow_provider_tiktok.get_provider_info import CONNECTION_FIELDS, PRODUCTION_BASE_URL, UI_FIELD_BEHAVIOUR
from airflow_provider_tiktok.limits import (
    MAX_AUDIENCE_NAME_LENGTH,
    MAX_AUDIENCES_PER_ADVERTISER,
    MAX_REQUESTS_PER_SECOND,
    MAX_USERS_PER_MAPPING,
)
from airflow_provider_tiktok.sync.coordination import creation_lock, resolve_store_url
from airflow_provider_tiktok.sync.ratelimit import RequestGate, request_gate_for

AUDIENCE_PAGE_SIZE = 100
AUDIENCE_GET_CHUNK = 100
#: The words our users write (``add``/``remove``) and the API's ``segment/mapping`` actions.
MAPPING_ACTIONS = {"add": "add", "remove": "delete"}
FileAction = Literal["APPEND", "REMOVE", "REPLACE"]
FILE_ACTIONS: tuple[FileAction, ...] = ("APPEND", "REMOVE", "REPLACE")
LookalikeSize = Literal["NARROW", "BALANCED", "BROAD"]
MAX_IDS_PER_DELETE = 100
MAX_IDS_PER_SHARE = 10
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_DOTTED_QUAD = re.compile(r"^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


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

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.requests, self.retries, self.rate_limited


def validate_base_url(host: str | None) -> str:
    """The connection's ``host`` as an API base URL, judged by the host the HTTP client will connect to.

    Only a plain ``scheme://host[:port]/path`` passes: no userinfo, backslashes, percent-escapes, query
    or fragment, since URL parsers disagree about those and a token could leave for another host.
    Plain ``http`` is accepted only for loopback literals (``localhost``, ``127.x.y.z``, ``[::1]``).
    """
    if not host:
        return PRODUCTION_BASE_URL
    url = host.strip() if "://" in host else f"https://{host.strip()}"

    def refuse(why: str) -> TikTokConfigurationError:
        return TikTokConfigurationError(f"API base URL {host!r} is refused: {why}.")

    if any(c in url for c in "\\@%?#") or any(ord(c) <= 32 or ord(c) >= 127 for c in url):
        raise refuse("it may hold only scheme://host[:port]/path, without '@', '\\', '%', '?', '#' or spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise refuse("it is not an http(s) URL")
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise refuse("its port is not a number") from None
    netloc = parts.netloc
    if not hostname or port == 0 or not (_HOST.match(hostname) or _ipv6_literal(netloc)):
        raise refuse("its host is not a plain DNS name or IP address")
    if hostname.replace(".", "").isdigit() and not _DOTTED_QUAD.match(hostname):
        raise refuse("write IPv4 addresses as four decimal numbers")
    if parts.scheme == "http" and not is_loopback_host(hostname):
        raise refuse(
            "plain http is accepted only for loopback hosts (127.0.0.1, localhost, [::1], e.g. the local emulator); "
            "use https"
        )
    return url if url.endswith("/") else url + "/"


def _ipv6_literal(netloc: str) -> bool:
    match = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::\d+)?$", netloc)
    if not match:
        return False
    try:
        ipaddress.IPv6Address(match.group(1))
    except ValueError:
        return False
    return True


def is_loopback_host(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    if _DOTTED_QUAD.match(hostname) or ":" in hostname:
        return ipaddress.ip_address(hostname).is_loopback
    return False


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Public roots (certifi) plus, optionally, the user's CA bundle; never less verification."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        path = Path(ca_bundle)
        if not path.is_file():
            raise TikTokConfigurationError(f"The connection's ca_bundle {ca_bundle!r} is not a readable file.")
        try:
            context.load_verify_locations(cafile=str(path))
        except ssl.SSLError:
            raise TikTokConfigurationError(
                f"The connection's ca_bundle {ca_bundle!r} holds no PEM certificate."
            ) from None
    return context


class _TLSAdapter(HTTPAdapter):
    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def network_error(err: BaseException, endpoint: str, base_url: str) -> TikTokAPIError:
    """One mapping of transport failures for both clients: certificate problems are the user's to fix,
    everything else that broke a request or its response (reset, timeout, cut mid-body) is transient."""
    if isinstance(err, requests.exceptions.SSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return TikTokTLSError(
            TLS_ERROR_CODE,
            f"TLS certificate of {urlsplit(base_url).hostname} was not trusted ({type(err).__name__}); if a corporate "
            "proxy re-signs TLS, set the connection's 'ca_bundle' extra to its CA file",
            endpoint=endpoint,
        )
    return TikTokTransientError(NETWORK_ERROR_CODE, f"{type(err).__name__} talking to the API", endpoint=endpoint)


# Transport failures of each client library; anything else raised while sending is a bug, not the network.
_REQUESTS_FAILURES = (requests.RequestException,)
_AIOHTTP_FAILURES = (aiohttp.ClientError, TimeoutError)


class TikTokHook(BaseHook):
    """
    Talk to the TikTok Marketing API (v1.3) with an OAuth access token kept in an Airflow Connection.

    Connection: ``host`` = API base URL (empty means production), ``password`` = access token,
    extras ``app_id``, ``secret`` (app secret, only sent to OAuth endpoints), ``advertiser_id``,
    ``ca_bundle`` (extra trusted CAs).

    Not an ``HttpHook``: its ``get_conn`` copies every extra into headers (our extras hold the app secret),
    its ``run``/``check_response`` send without the ``Access-Token`` header and turn TikTok's HTTP-200
    errors into untyped exceptions before a retry policy can see them; everything it offers would be
    overridden here. The transport below is small: one pooled ``requests`` session and tenacity.

    :param tiktok_conn_id: the ``tiktok`` connection to use.
    :param timeout: (connect, read) seconds for every request.
    :param request_retry_limit: attempts per call for rate-limited and transient errors.
    :param request_retry_seconds: wall-clock cap for one call's retries.
    :param request_retry_min_wait: first back-off in seconds (grows exponentially, with jitter).
    :param request_retry_max_wait: longest single back-off.
    :param pool_maxsize: pooled connections; sized for the operator's worker threads.
    :param request_gate: called before every send (retries included), e.g. the shared rate budget.
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
        request_retry_limit: int = 8,
        request_retry_seconds: float = 300.0,
        request_retry_min_wait: float = 1.0,
        request_retry_max_wait: float = 60.0,
        pool_maxsize: int = 64,
        request_gate: RequestGate | None = None,
    ) -> None:
        super().__init__()
        self.tiktok_conn_id = tiktok_conn_id
        self.timeout = timeout
        self.pool_maxsize = pool_maxsize
        self.request_gate = request_gate
        self.stats = CallStats()
        self._connection_override: Connection | None = None
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._retry_args: dict[str, Any] = {
            "stop": tenacity.stop_after_attempt(request_retry_limit) | tenacity.stop_after_delay(request_retry_seconds),
            "wait": tenacity.wait_exponential_jitter(initial=request_retry_min_wait, max=request_retry_max_wait),
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

        widgets: dict[str, Any] = {}
        for name, spec in CONNECTION_FIELDS.items():
            secret = spec["schema"].get("format") == "password"
            kind, widget = (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
            widgets[name] = kind(lazy_gettext(spec["label"]), description=spec["description"], widget=widget())
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

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
        _mask_secrets(conn)
        return conn

    @cached_property
    def coordination_store(self) -> str | None:
        """The store every sync on this token shares (rate budget, creation lock), if the deployment has one."""
        return resolve_store_url(self.connection.extra_dejson)

    def share_rate_budget(self, max_qps: float = MAX_REQUESTS_PER_SECOND) -> None:
        """Gate every request on the token's 50 requests/s, shared with every other sync on it through the
        coordination store (or, without one, on a limiter of this hook's own); ``max_qps`` caps this hook."""
        self.request_gate = request_gate_for(self._access_token(), max_qps, store_url=self.coordination_store)

    @cached_property
    def api_base_url(self) -> str:
        return validate_base_url(self.connection.host)

    def advertiser_id(self, explicit: str | None = None) -> str:
        """The ad account a task works on: its own setting, else the connection's default."""
        chosen = explicit or self.connection.extra_dejson.get("advertiser_id")
        if not chosen:
            raise TikTokConfigurationError(
                f"No ad account chosen: set advertiser_id or the 'advertiser_id' extra of {self.tiktok_conn_id!r}."
            )
        return str(chosen)

    def _app_credentials(self) -> tuple[str, str] | None:
        extras = self.connection.extra_dejson
        app_id, secret = extras.get("app_id"), extras.get("secret")
        return (str(app_id), str(secret)) if app_id and secret else None

    def _access_token(self) -> str:
        token = self.connection.password
        if not token:
            raise TikTokConfigurationError(
                f"Connection {self.tiktok_conn_id!r} has no access token (the 'password' field). "
                "Run `python -m airflow_provider_tiktok.oauth` to obtain one."
            )
        return token

    def get_conn(self) -> requests.Session:
        """One pooled session per hook, shared by the operator's threads; extras never become headers."""
        with self._session_lock:
            if self._session is None:
                session = requests.Session()
                context = tls_context(self.connection.extra_dejson.get("ca_bundle"))
                adapter = _TLSAdapter(context, pool_connections=4, pool_maxsize=self.pool_maxsize, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.trust_env = False  # no proxy or .netrc from the environment: the token goes only to host
                session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
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
        files: dict[str, tuple[str, bytes, str]] | None = None,
        authenticated: bool = True,
    ) -> dict[str, Any]:
        """Send one API call with retries; return the envelope's ``data`` or raise a typed error.

        With ``files`` (``{field: (file name, content, media type)}``) the call is multipart: ``body``
        becomes its form fields and the session's JSON content type gives way to the multipart one.
        """
        headers: dict[str, str | None] = {"Access-Token": self._access_token()} if authenticated else {}
        payload: bytes | dict[str, Any] | None
        if files is not None:
            payload, headers["Content-Type"] = body, None  # None drops the session's header for this request
        else:
            payload = orjson.dumps(body) if body is not None else None
        retrying = tenacity.Retrying(**self._retry_args)
        return retrying(self._send_once, method, endpoint, params, payload, headers, files)

    def _send_once(
        self,
        method: str,
        endpoint: str,
        params: dict[str, Any] | None,
        payload: bytes | dict[str, Any] | None,
        headers: dict[str, str | None],
        files: dict[str, tuple[str, bytes, str]] | None = None,
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
                files=files,
                headers=headers,
                timeout=self.timeout,
            )
        except _REQUESTS_FAILURES as err:  # incl. a connection cut mid-body (ChunkedEncodingError)
            raise network_error(err, endpoint, self.api_base_url) from None
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        try:
            return envelope_data(response.status_code, parsed, endpoint)
        except TikTokRateLimitError:
            self.stats.add(rate_limited=1)
            raise

    # --- API calls ---------------------------------------------------------------------------

    def get_user_info(self) -> dict[str, Any]:
        """Cheapest call that proves the token works."""
        return self.call("GET", "user/info/")

    def list_advertisers(self) -> list[dict[str, Any]]:
        """Ad accounts the token is authorised for (needs the app id and secret)."""
        credentials = self._app_credentials()
        if credentials is None:
            raise TikTokConfigurationError(
                f"Connection {self.tiktok_conn_id!r} needs extras 'app_id' and 'secret' for this call."
            )
        app_id, secret = credentials
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

    def check_access(self, advertiser_ids: str | Sequence[str]) -> None:
        """The token works, and (when the app credentials allow listing) it may act for every one of
        ``advertiser_ids`` (one id or several), checked with one listing."""
        self.get_user_info()
        if self._app_credentials() is None:
            return
        authorised = {str(a.get("advertiser_id")) for a in self.list_advertisers()}
        refused = [a for a in _as_list(advertiser_ids) if a not in authorised]
        if refused:
            raise TikTokPermissionError(
                40001,
                f"advertiser {', '.join(refused)} is not authorised for this token (authorised: "
                f"{', '.join(sorted(authorised)) or 'none'})",
                endpoint="oauth2/advertiser/get/",
            )

    def iter_audiences(self, advertiser_id: str) -> Iterator[dict[str, Any]]:
        """Every custom audience of an advertiser, page by page."""
        page: int | None = 1
        while page is not None:
            data = self.call("GET", "dmp/custom_audience/list/", params=_list_params(advertiser_id, page))
            yield from data.get("list") or []
            page = _next_page(data, page)

    def list_audiences(self, advertiser_id: str) -> list[dict[str, Any]]:
        return list(self.iter_audiences(advertiser_id))

    def get_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Audience details for the given ids, fetched 100 at a time."""
        details: list[dict[str, Any]] = []
        for start in range(0, len(audience_ids), AUDIENCE_GET_CHUNK):
            chunk = [str(a) for a in audience_ids[start : start + AUDIENCE_GET_CHUNK]]
            data = self.call("GET", "dmp/custom_audience/get/", params=_get_params(advertiser_id, chunk))
            details.extend(_details(data))
        return details

    def find_audience(
        self, advertiser_id: str, *, audience_id: str | None = None, audience_name: str | None = None
    ) -> dict[str, Any] | None:
        """One audience by id, or the oldest with this exact name; None when there is none."""
        if not audience_id:
            return oldest_named(self.iter_audiences(advertiser_id), str(audience_name))
        try:
            return next(iter(self.get_audiences(advertiser_id, [audience_id])), None)
        except TikTokBadRequestError:
            return None  # TikTok answers 40002 for an id it does not know

    def create_audience(self, advertiser_id: str, name: str) -> str:
        check_audience_name(name)
        data = self.call(
            "POST",
            "segment/audience/",
            body={"advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name},
        )
        return str(data["audience_id"])

    def create_audience_once(
        self,
        advertiser_id: str,
        name: str,
        *,
        create: Callable[[str, str], str] | None = None,
    ) -> str:
        """Find ``name`` or create it, so that racing tasks end with one audience.

        The shared store's creation lock (``sync/coordination.py``, where one is configured) makes the race
        rare: a second task waits, then finds the first one's audience. Converging on the oldest audience of
        that name, and deleting our own duplicate, keeps the end state right without it.
        ``create(advertiser_id, name)`` makes the audience (default: an empty Segment API audience; the
        customer-file path and lookalikes pass their own).
        """
        with creation_lock(self.coordination_store, self._access_token(), advertiser_id, name):
            audiences = self.list_audiences(advertiser_id)  # one listing: is it there, and is there room
            existing = oldest_named(audiences, name)
            if existing is not None:
                return str(existing["audience_id"])
            if len(audiences) >= MAX_AUDIENCES_PER_ADVERTISER:
                raise TikTokConfigurationError(
                    f"Advertiser {advertiser_id} already has {MAX_AUDIENCES_PER_ADVERTISER} audiences (TikTok's cap); "
                    "delete unused ones or sync into an existing audience."
                )
            created = (create or self.create_audience)(advertiser_id, name)
            winner = self.find_audience(advertiser_id, audience_name=name)
        winner_id = str(winner["audience_id"]) if winner else created
        if winner_id != created:
            self.log.info("Another task created audience %r first; using %s and deleting ours.", name, winner_id)
            with suppress(TikTokBadRequestError):  # already gone: a retried delete whose first answer was lost
                self.delete_audience(advertiser_id, created)
        else:
            self.log.info("Created audience %r (%s).", name, created)
        return winner_id

    def delete_audience(self, advertiser_id: str, audience_id: str) -> None:
        self.call(
            "POST",
            "segment/audience/",
            body={"advertiser_id": advertiser_id, "action": "delete", "delete_audience_id": [audience_id]},
        )

    def map_batch(
        self,
        action: Literal["add", "remove"],
        advertiser_ids: str | Sequence[str],
        audience_ids: Sequence[str],
        batch: UserBatch,
    ) -> None:
        """Add or remove a prepared batch in every one of ``audience_ids`` at once; its JSON is built by Arrow,
        not row by row. Each audience must belong to one of ``advertiser_ids`` (one id or several), so one
        request serves several ad accounts. A 40002 for an audience that no longer exists is reported as
        such (fatal), not as a bad payload."""
        if len(batch) > MAX_USERS_PER_MAPPING:
            raise TikTokBadRequestError(40061, f"batch {batch.number} has {len(batch)} users; the limit is 10000")
        advertisers = _as_list(advertiser_ids)
        body = {
            "advertiser_ids": advertisers,
            "action": MAPPING_ACTIONS[action],
            "id_schema": list(batch.id_schema),
            "batch_data": orjson.Fragment(batch.batch_data_json(audience_ids)),
        }
        try:
            self.call("POST", "segment/mapping/", body=body)
        except TikTokBadRequestError as err:
            # One audience per account, in the same order (the Segment uploader's way): look each up at its owner.
            paired = len(advertisers) == len(audience_ids)
            owners = {a: [owner] for a, owner in zip(audience_ids, advertisers, strict=False)} if paired else {}
            gone = [
                a
                for a in audience_ids
                if err.code == 40002 and not self._audience_exists(owners.get(a, advertisers), a)
            ]
            if gone:
                raise TikTokAudienceDeletedError(
                    err.code, f"audience {', '.join(gone)} no longer exists", endpoint=err.endpoint
                ) from None
            raise

    def _audience_exists(self, advertiser_ids: Sequence[str], audience_id: str) -> bool:
        return any(self.find_audience(advertiser, audience_id=audience_id) for advertiser in advertiser_ids)

    # --- customer files and lifecycle -----------------------------------------------------
    # Shapes as TikTok's official SDK (``business_api_client.AudienceApi``) sends them.

    def upload_audience_file(self, advertiser_id: str, calculate_type: str, content: bytes, file_name: str) -> str:
        """Upload one customer file (one digest a line); returns the ``file_path`` that create and
        update take. Uploading the same content again is harmless: it only yields another path."""
        form = {
            "advertiser_id": advertiser_id,
            "calculate_type": calculate_type,
            "file_name": file_name,
            "file_signature": hashlib.md5(content, usedforsecurity=False).hexdigest(),
        }
        files = {"file": (file_name, content, mimetypes.guess_type(file_name)[0] or "application/octet-stream")}
        data = self.call("POST", "dmp/custom_audience/file/upload/", body=form, files=files)
        return str(data["file_path"])

    def create_audience_from_files(
        self,
        advertiser_id: str,
        name: str,
        calculate_type: str,
        file_paths: Sequence[str],
        *,
        retention_in_days: int | None = None,
        audience_sub_type: Literal["NORMAL", "REACH_FREQUENCY"] = "NORMAL",
        audience_enhancement: bool = False,
    ) -> str:
        """A Customer File audience from uploaded files, all of ``calculate_type``; its id."""
        check_audience_name(name)  # 70, not 128: findable by name on both APIs
        body: dict[str, Any] = {
            "advertiser_id": advertiser_id,
            "audience_enhancement": audience_enhancement,
            "audience_sub_type": audience_sub_type,
            "calculate_type": calculate_type,
            "custom_audience_name": name,
            "file_paths": list(file_paths),
        }
        if retention_in_days is not None:
            body["retention_in_days"] = retention_in_days
        return str(self.call("POST", "dmp/custom_audience/create/", body=body)["custom_audience_id"])

    def update_audience_files(
        self, advertiser_id: str, audience_id: str, action: FileAction, file_paths: Sequence[str]
    ) -> None:
        """APPEND, REMOVE or REPLACE members with uploaded files. TikTok refuses (and changes nothing)
        when the audience would hold fewer than 1,000 users afterwards."""
        if action not in FILE_ACTIONS:
            raise TikTokConfigurationError(f"action must be one of {', '.join(FILE_ACTIONS)}, not {action!r}.")
        body = {
            "action": action,
            "advertiser_id": advertiser_id,
            "custom_audience_id": str(audience_id),
            "file_paths": list(file_paths),
        }
        self.call("POST", "dmp/custom_audience/update/", body=body)

    def rename_audience(self, advertiser_id: str, audience_id: str, name: str) -> None:
        check_audience_name(name)  # 70, not 128: findable by name on both APIs
        body = {"advertiser_id": advertiser_id, "custom_audience_id": str(audience_id), "custom_audience_name": name}
        self.call("POST", "dmp/custom_audience/update/", body=body)

    def delete_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> None:
        """Delete the advertiser's own audiences, 100 per call (TikTok's limit)."""
        for chunk in _chunks(audience_ids, MAX_IDS_PER_DELETE):
            body = {"advertiser_id": advertiser_id, "custom_audience_ids": chunk}
            self.call("POST", "dmp/custom_audience/delete/", body=body)

    def create_lookalike(
        self,
        advertiser_id: str,
        name: str,
        source_audience_id: str,
        *,
        location_ids: Sequence[str],
        audience_size: LookalikeSize = "BALANCED",
        include_source: bool = False,
        mobile_os: Literal["ALL", "ANDROID", "IOS"] = "ALL",
        placements: Sequence[str] = ("TIKTOK",),
    ) -> str:
        """A lookalike of a seed audience (not itself a lookalike; TikTok wants at least 100 members); its id."""
        check_audience_name(name)  # 70, not 128: findable by name on both APIs
        if not location_ids:
            raise TikTokConfigurationError("A lookalike needs at least one location id (TikTok's lookalike locations).")
        spec = {
            "audience_size": audience_size,
            "include_source": include_source,
            "location_ids": [str(location) for location in location_ids],
            "mobile_os": mobile_os,
            "placements": list(placements),
            "source_audience_id": str(source_audience_id),
        }
        body = {"advertiser_id": advertiser_id, "custom_audience_name": name, "lookalike_spec": spec}
        return str(self.call("POST", "dmp/custom_audience/lookalike/create/", body=body)["custom_audience_id"])

    def refresh_lookalikes(self, advertiser_id: str, audience_ids: Sequence[str]) -> None:
        """Recompute lookalikes from their seeds' current members."""
        for chunk in _chunks(audience_ids, MAX_IDS_PER_DELETE):
            body = {"advertiser_id": advertiser_id, "custom_audience_ids": chunk}
            self.call("POST", "dmp/custom_audience/lookalike/update/", body=body)

    def share_audiences(
        self, advertiser_id: str, audience_ids: Sequence[str], shared_advertiser_ids: Sequence[str]
    ) -> None:
        """Share audiences with other ad accounts of the same Business Center (1-10 of each per call)."""
        for audiences in _chunks(audience_ids, MAX_IDS_PER_SHARE):
            for targets in _chunks(shared_advertiser_ids, MAX_IDS_PER_SHARE):
                body = {
                    "advertiser_id": advertiser_id,
                    "custom_audience_ids": audiences,
                    "shared_advertiser_ids": targets,
                }
                self.call("POST", "dmp/custom_audience/share/", body=body)

    def cancel_share(self, advertiser_id: str, audience_id: str, shared_advertiser_id: str) -> None:
        body = {
            "advertiser_id": advertiser_id,
            "custom_audience_id": str(audience_id),
            "shared_advertiser_id": str(shared_advertiser_id),
        }
        self.call("POST", "dmp/custom_audience/share/cancel/", body=body)

    def active_adgroups(self, advertiser_id: str, audience_ids: Sequence[str]) -> dict[str, list[str]]:
        """Audience id -> the enabled ad groups it is applied to now, from ``apply/log/`` (the latest
        application of each; the advertiser must own the audiences). Audiences in none are left out."""
        applied: dict[str, list[str]] = {}
        for chunk in _chunks(audience_ids, AUDIENCE_GET_CHUNK):
            page: int | None = 1
            while page is not None:
                params = {**_get_params(advertiser_id, chunk), "page": page, "page_size": AUDIENCE_PAGE_SIZE}
                data = self.call("GET", "dmp/custom_audience/apply/log/", params=params)
                for row in data.get("list") or []:
                    if str(row.get("action", "")).upper() == "APPLY" and row.get("operation_status") == "ENABLE":
                        applied.setdefault(str(row["custom_audience_id"]), []).append(str(row["adgroup_id"]))
                page = _next_page(data, page)
        return applied

    # --- async (triggerer) -------------------------------------------------------------------

    async def afind_audience(
        self, advertiser_id: str, *, audience_id: str | None = None, audience_name: str | None = None
    ) -> dict[str, Any] | None:
        """``find_audience`` for the triggerer. No retries: the sensor treats a retryable error as
        "not yet" and polls again."""
        connection = await self.aget_connection(self.tiktok_conn_id)
        _mask_secrets(connection)
        token = connection.password
        if not token:
            raise TikTokConfigurationError(f"Connection {self.tiktok_conn_id!r} has no access token.")
        base_url = validate_base_url(connection.host)
        context = tls_context(connection.extra_dejson.get("ca_bundle"))
        timeout = aiohttp.ClientTimeout(sock_connect=self.timeout[0], sock_read=self.timeout[1])
        async with aiohttp.ClientSession(
            base_url=base_url,
            headers={"Access-Token": token},
            timeout=timeout,
            trust_env=False,
            connector=aiohttp.TCPConnector(ssl=context),
        ) as session:

            async def get(endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
                try:
                    async with session.get(endpoint, params=params) as response:
                        status = response.status
                        try:
                            parsed = await response.json(content_type=None)
                        except ValueError:
                            parsed = None
                except _AIOHTTP_FAILURES as err:
                    raise network_error(err, endpoint, base_url) from None
                return envelope_data(status, parsed, endpoint)

            if audience_id:
                try:
                    data = await get("dmp/custom_audience/get/", _get_params(advertiser_id, [str(audience_id)]))
                except TikTokBadRequestError:
                    return None  # TikTok answers 40002 for an id it does not know
                return next(iter(_details(data)), None)
            audiences: list[dict[str, Any]] = []
            page: int | None = 1
            while page is not None:
                data = await get("dmp/custom_audience/list/", _list_params(advertiser_id, page))
                audiences.extend(data.get("list") or [])
                page = _next_page(data, page)
            return oldest_named(audiences, str(audience_name))

    # --- Airflow UI ------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_user_info()
            if self._app_credentials() is not None:
                listed = ", ".join(
                    f"{a.get('advertiser_id')} ({a.get('advertiser_name', '')})" for a in self.list_advertisers()
                )
                return True, f"Token works; advertisers: {listed or 'none authorised'}"
            advertiser = self.connection.extra_dejson.get("advertiser_id")
            return True, f"Token works; advertisers: {advertiser or 'not listed (set app_id and secret)'}"
        except (TikTokAPIError, TikTokConfigurationError) as err:
            return False, str(err)


def check_audience_name(name: str) -> None:
    if not name or len(name) > MAX_AUDIENCE_NAME_LENGTH:
        raise TikTokConfigurationError(
            f"Audience name must be 1-{MAX_AUDIENCE_NAME_LENGTH} characters (TikTok cuts longer ones, "
            f"which would break finding it again by name); got {len(name or '')}."
        )


def _as_list(ids: str | Sequence[str]) -> list[str]:
    """One id or several, as a list of strings."""
    return [ids] if isinstance(ids, str) else [str(i) for i in ids]


def _chunks(values: Sequence[str], size: int) -> Iterator[list[str]]:
    items = [str(v) for v in values]
    for start in range(0, len(items), size):
        yield items[start : start + size]


def oldest_named(audiences: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Among audiences with exactly this name, the oldest (so concurrent creators agree on one)."""
    matches = [a for a in audiences if a.get("name") == name]
    if not matches:
        return None
    return min(matches, key=lambda a: (a.get("create_time") or "", str(a.get("audience_id"))))


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


def _mask_secrets(conn: Connection) -> None:
    for value in (conn.password, conn.extra_dejson.get("secret")):
        if value:
            mask_secret(value)


def _list_params(advertiser_id: str, page: int) -> dict[str, Any]:
    return {"advertiser_id": advertiser_id, "page": page, "page_size": AUDIENCE_PAGE_SIZE}


def _next_page(data: dict[str, Any], page: int) -> int | None:
    total_pages = int((data.get("page_info") or {}).get("total_page") or 0)
    return page + 1 if page < total_pages else None


def _get_params(advertiser_id: str, audience_ids: list[str]) -> dict[str, Any]:
    return {"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps(audience_ids)}


def _details(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [item.get("audience_details") or {} for item in data.get("list") or []]
