"""Typed TikTok API errors and the single classifier that maps a response code to one of them.

No Airflow imports: the emulator and the pure core use the same code tables.
"""

from __future__ import annotations

from typing import ClassVar

SUCCESS_CODES = frozenset({0, 20001})
RATE_LIMIT_CODES = frozenset({40100, 40132, 61000})
TOKEN_CODES = frozenset({40102, 40104, 40105, 40113})
PERMISSION_CODES = frozenset({40001, 40003, 40130, 40300, 40301})
BAD_REQUEST_CODES = frozenset({40000, 40002, 40007, 40061, 40062})
TRANSIENT_CODES = frozenset({50000, 50002, 51003, 51063, 60001})

#: Pseudo-codes for failures that never reached TikTok's envelope.
HTTP_ERROR_CODE = -1
NETWORK_ERROR_CODE = -2
TLS_ERROR_CODE = -3

REAUTHORISE_HINT = (
    "Re-authorise: run `python -m airflow_provider_tiktok.oauth --app-id <APP_ID> --conn-id <CONN_ID>` "
    "and update the connection's access token."
)


class TikTokError(Exception):
    """Base class of every error this provider raises on purpose."""


class TikTokAPIError(TikTokError):
    """An API call failed; ``retryable`` says whether sending the same request later may succeed."""

    retryable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False
    hint: ClassVar[str] = ""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        request_id: str | None = None,
        endpoint: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.endpoint = endpoint
        self.http_status = http_status
        super().__init__()  # __str__ renders from the fields, which the hook may still redact

    def __str__(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint else ""
        rid = f" (request_id={self.request_id})" if self.request_id else ""
        hint = f" {self.hint}" if self.hint else ""
        return f"TikTok API error {self.code}{where}: {self.message}{rid}.{hint}"

    def __reduce__(self):
        # Keeps the error picklable across process pools and Airflow's supervisor.
        return (
            _rebuild_error,
            (type(self), self.code, self.message, self.request_id, self.endpoint, self.http_status),
        )


def _rebuild_error(cls, code, message, request_id, endpoint, http_status):
    return cls(code, message, request_id=request_id, endpoint=endpoint, http_status=http_status)


class TikTokRateLimitError(TikTokAPIError):
    retryable = True


class TikTokTransientError(TikTokAPIError):
    retryable = True


class TikTokTokenError(TikTokAPIError):
    fatal = True
    hint = REAUTHORISE_HINT


class TikTokPermissionError(TikTokAPIError):
    fatal = True
    hint = (
        "Ask your TikTok Business Center admin to grant this app Audience Management on the advertiser, "
        "then re-authorise if the scope changed."
    )


class TikTokBadRequestError(TikTokAPIError):
    """The payload is wrong; resending it unchanged cannot succeed."""


class TikTokAudienceDeletedError(TikTokAPIError):
    fatal = True
    hint = "The audience no longer exists in TikTok; recreate it or point the task at another audience."


class TikTokTLSError(TikTokAPIError):
    """The server's certificate was not trusted: retrying cannot help, the connection's set-up must change."""

    fatal = True


class TikTokSourceError(TikTokError):
    """Reading the source failed part-way; a retry stages afresh."""


class TikTokWarehouseError(TikTokError):
    """The warehouse refused or failed a statement (an outage may pass: retryable); ``integrity`` when a
    table's own constraints refused a row."""

    integrity: bool = False


class TikTokConfigurationError(TikTokError, ValueError):
    """The task or connection is set up wrongly; raised before anything is sent."""


def error_for_code(
    code: int,
    message: str,
    *,
    request_id: str | None = None,
    endpoint: str | None = None,
    http_status: int | None = None,
) -> TikTokAPIError:
    """Build the typed error for a non-success envelope code (SPEC §2 error table)."""
    cls: type[TikTokAPIError]
    if code in RATE_LIMIT_CODES:
        cls = TikTokRateLimitError
    elif code in TOKEN_CODES:
        cls = TikTokTokenError
    elif code in PERMISSION_CODES:
        cls = TikTokPermissionError
    elif code in TRANSIENT_CODES or code in (HTTP_ERROR_CODE, NETWORK_ERROR_CODE) or 50000 <= code < 70000:
        cls = TikTokTransientError
    elif code in BAD_REQUEST_CODES or 40000 <= code < 50000:
        cls = TikTokBadRequestError
    else:
        cls = TikTokAPIError
    return cls(code, message, request_id=request_id, endpoint=endpoint, http_status=http_status)


def error_for_http_status(status: int, endpoint: str | None, request_id: str | None = None) -> TikTokAPIError:
    """HTTP-level failures: 5xx and 429 are worth retrying, other statuses are not."""
    message = f"HTTP {status}"
    if status >= 500:
        return TikTokTransientError(HTTP_ERROR_CODE, message, endpoint=endpoint, http_status=status)
    if status == 429:
        return TikTokRateLimitError(HTTP_ERROR_CODE, message, endpoint=endpoint, http_status=status)
    if status in (401, 403):
        return TikTokTokenError(HTTP_ERROR_CODE, message, endpoint=endpoint, http_status=status)
    return TikTokBadRequestError(HTTP_ERROR_CODE, message, request_id=request_id, endpoint=endpoint, http_status=status)


def unwrap_envelope(payload: object, *, endpoint: str, http_status: int | None = None) -> tuple[dict, str | None]:
    """Return ``(data, request_id)`` of a success envelope; raise the typed error otherwise."""
    if not isinstance(payload, dict) or "code" not in payload:
        raise TikTokTransientError(
            HTTP_ERROR_CODE, "response is not a TikTok envelope", endpoint=endpoint, http_status=http_status
        )
    code = int(payload["code"])
    request_id = payload.get("request_id")
    if code not in SUCCESS_CODES:
        raise error_for_code(
            code,
            str(payload.get("message", "")),
            request_id=request_id,
            endpoint=endpoint,
            http_status=http_status,
        )
    return payload.get("data") or {}, request_id
