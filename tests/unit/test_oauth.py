"""OAuth helpers and the command-line flow (exchange against requests-mock)."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import parse_qs, urlparse

import pytest

from airflow_provider_tiktok.exceptions import TikTokError
from airflow_provider_tiktok.oauth import auth_code_from_redirect, build_authorization_url, main

BASE = "https://api.example.test/open_api/v1.3/"


def test_authorization_url_carries_app_redirect_and_a_random_state():
    url, state = build_authorization_url("app-1", "https://example.com/cb")
    _, other_state = build_authorization_url("app-1", "https://example.com/cb")
    query = parse_qs(urlparse(url).query)
    assert url.startswith("https://business-api.tiktok.com/portal/auth?")
    assert query == {"app_id": ["app-1"], "state": [state], "redirect_uri": ["https://example.com/cb"]}
    assert state != other_state and len(state) >= 16


def test_redirect_with_a_foreign_state_is_refused():
    assert auth_code_from_redirect("https://cb/?auth_code=abc&state=s1", "s1") == "abc"
    assert auth_code_from_redirect("  abc  ", "s1") == "abc"
    with pytest.raises(TikTokError, match="state does not match"):
        auth_code_from_redirect("https://cb/?auth_code=abc&state=evil", "s1")


def test_cli_exchanges_the_code_and_writes_a_private_connection_file(tmp_path, requests_mock, monkeypatch, capsys):
    monkeypatch.setenv("TIKTOK_APP_SECRET", "the-app-secret")
    requests_mock.post(
        BASE + "oauth2/access_token/",
        json={
            "code": 0,
            "message": "OK",
            "request_id": "r",
            "data": {"access_token": "new-token-123", "advertiser_ids": ["7001"], "scope": [4]},
        },
    )
    target = tmp_path / "conn.json"
    code = main(
        [
            "--app-id",
            "app-1",
            "--base-url",
            BASE,
            "--auth-code",
            "code-1",
            "--write-connection-to",
            str(target),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0
    assert requests_mock.last_request.json() == {
        "app_id": "app-1",
        "secret": "the-app-secret",
        "auth_code": "code-1",
    }
    assert "new-token-123" not in printed.out + printed.err
    assert "the-app-secret" not in printed.out + printed.err
    assert "7001" in printed.out
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    stored = json.loads(target.read_text())
    assert stored["password"] == "new-token-123"
    assert stored["extra"] == {"app_id": "app-1", "secret": "the-app-secret", "advertiser_id": "7001"}


def test_cli_reports_a_rejected_code_without_the_secret(requests_mock, monkeypatch, capsys):
    monkeypatch.setenv("TIKTOK_APP_SECRET", "the-app-secret")
    requests_mock.post(
        BASE + "oauth2/access_token/",
        json={"code": 40000, "message": "auth_code expired for the-app-secret", "request_id": "r"},
    )
    assert main(["--app-id", "app-1", "--base-url", BASE, "--auth-code", "old"]) == 1
    err = capsys.readouterr().err
    assert "40000" in err and "the-app-secret" not in err
