"""OAuth for the Marketing API: build the consent URL, swap the auth code, write the Airflow connection.

Run ``python -m airflow_provider_tiktok.oauth --app-id APP_ID`` (or ``tiktok-oauth``). The app secret is
read from ``$TIKTOK_APP_SECRET`` or a hidden prompt, and the new token is never printed in clear.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlparse

from airflow_provider_tiktok.exceptions import TikTokError

AUTHORIZE_URL = "https://business-api.tiktok.com/portal/auth"


def build_authorization_url(app_id: str, redirect_uri: str, state: str | None = None) -> tuple[str, str]:
    """Return ``(url, state)``; check the ``state`` TikTok sends back to defeat forged redirects."""
    state = state or secrets.token_urlsafe(16)
    query = urlencode({"app_id": app_id, "state": state, "redirect_uri": redirect_uri})
    return f"{AUTHORIZE_URL}?{query}", state


def auth_code_from_redirect(pasted: str, expected_state: str) -> str:
    """Accept either the bare code or the whole redirect URL, verifying ``state`` when present."""
    pasted = pasted.strip()
    if "://" not in pasted and "auth_code=" not in pasted:
        return pasted
    query = parse_qs(urlparse(pasted).query if "://" in pasted else pasted)
    state = (query.get("state") or [None])[0]
    if state is not None and state != expected_state:
        raise TikTokError("The redirect's state does not match this session's; start the flow again.")
    code = (query.get("auth_code") or query.get("code") or [None])[0]
    if not code:
        raise TikTokError("No auth_code found in what was pasted.")
    return code


def connection_uri_json(
    conn_id: str, base_url: str | None, token: str, app_id: str, secret: str, advertiser_id: str | None
) -> str:
    """The JSON form Airflow accepts in ``AIRFLOW_CONN_<ID>`` and ``airflow connections add --conn-json``."""
    extra = {"app_id": app_id, "secret": secret}
    if advertiser_id:
        extra["advertiser_id"] = advertiser_id
    return json.dumps(
        {
            "conn_type": "tiktok",
            "host": base_url or "",
            "password": token,
            "extra": extra,
            "description": conn_id,
        }
    )


def _redact(text: str, *values: str) -> str:
    for value in values:
        if value:
            text = text.replace(value, "***")
    return text


def main(argv: list[str] | None = None, read_line: Callable[[str], str] = input) -> int:
    parser = argparse.ArgumentParser(prog="tiktok-oauth", description=__doc__)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--redirect-uri", default="https://localhost/callback")
    parser.add_argument("--base-url", default=None, help="API base URL (default: production)")
    parser.add_argument("--conn-id", default="tiktok_default")
    parser.add_argument("--advertiser-id", default=None, help="default ad account to store")
    parser.add_argument("--auth-code", default=None, help="skip the prompt (e.g. from the emulator)")
    parser.add_argument(
        "--write-connection-to",
        default=None,
        metavar="FILE",
        help="write the connection JSON to FILE (mode 600) instead of adding it to Airflow's database",
    )
    args = parser.parse_args(argv)
    from airflow_provider_tiktok.hooks.tiktok import TikTokHook

    secret = os.environ.get("TIKTOK_APP_SECRET") or getpass.getpass("App secret: ")
    url, state = build_authorization_url(args.app_id, args.redirect_uri)
    try:
        if args.auth_code:
            code = args.auth_code
        else:
            print(f"Open this URL, approve Ad Account and Audience Management, then paste the redirect:\n{url}")
            code = auth_code_from_redirect(read_line("Redirect URL or auth_code: "), state)
        hook = TikTokHook.for_base_url(args.base_url)
        granted = hook.exchange_auth_code(args.app_id, secret, code)
        token = granted["access_token"]
        advertisers = [str(a) for a in granted.get("advertiser_ids") or []]
        advertiser_id = args.advertiser_id or (advertisers[0] if len(advertisers) == 1 else None)
        conn_json = connection_uri_json(args.conn_id, args.base_url, token, args.app_id, secret, advertiser_id)
    except TikTokError as err:
        print(f"OAuth failed: {_redact(str(err), secret)}", file=sys.stderr)
        return 1
    print(f"Authorised advertisers: {', '.join(advertisers) or 'none'}")
    if args.write_connection_to:
        fd = os.open(args.write_connection_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(conn_json)
        print(
            f"Wrote connection {args.conn_id!r} to {args.write_connection_to}; load it with\n"
            f'  airflow connections add {args.conn_id} --conn-json "$(cat {args.write_connection_to})"'
        )
        return 0
    return _add_to_airflow(args.conn_id, conn_json, token, secret)


def _add_to_airflow(conn_id: str, conn_json: str, *sensitive: str) -> int:
    """Store the connection through Airflow's CLI so the token never passes through our stdout."""
    import subprocess

    subprocess.run(["airflow", "connections", "delete", conn_id], capture_output=True, check=False)
    done = subprocess.run(
        ["airflow", "connections", "add", conn_id, "--conn-json", conn_json],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(_redact(done.stderr, *sensitive), file=sys.stderr)
        return done.returncode
    print(f"Connection {conn_id!r} saved in Airflow (token and secret masked).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
