"""TikTokHook transport, errors, retries, secrets and API calls against requests-mock."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
import requests
from airflow.sdk._shared.secrets_masker import redact

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import (
    TikTokAudienceDeletedError,
    TikTokBadRequestError,
    TikTokConfigurationError,
    TikTokPermissionError,
    TikTokRateLimitError,
    TikTokTokenError,
    TikTokTransientError,
    error_for_code,
)
from airflow_provider_tiktok.hooks.tiktok import PRODUCTION_BASE_URL, TikTokHook, validate_base_url

BASE = "https://api.example.test/open_api/v1.3/"
TOKEN = "tok-ABCDEF-123456"
SECRET = "app-secret-987654"


def envelope(data=None, code=0, message="OK"):
    return {"code": code, "message": message, "request_id": "req-1", "data": data or {}}


@pytest.fixture
def conn_env(monkeypatch):
    def make(host=BASE, **extra):
        extras = {"app_id": "app-1", "secret": SECRET, "advertiser_id": "7001", **extra}
        monkeypatch.setenv(
            "AIRFLOW_CONN_TIKTOK_TEST",
            json.dumps({"conn_type": "tiktok", "host": host, "password": TOKEN, "extra": extras}),
        )

    make()
    return make


@pytest.fixture
def hook(conn_env):
    return TikTokHook("tiktok_test", request_retry_min_wait=0.001, request_retry_max_wait=0.002, request_retry_limit=4)


def test_requests_carry_the_access_token_header_and_no_extras(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope({"display_name": "me"}))
    assert hook.get_user_info() == {"display_name": "me"}
    sent = requests_mock.last_request.headers
    assert sent["Access-Token"] == TOKEN
    assert "Authorization" not in sent
    for leaked in ("app_id", "secret", "advertiser_id", SECRET):
        assert leaked not in {k.lower() for k in sent} and SECRET not in sent.values()


def test_rate_limit_is_retried_then_succeeds(hook, requests_mock):
    requests_mock.get(
        BASE + "user/info/",
        [{"json": envelope(code=40100, message="Too many requests")}, {"json": envelope({"ok": 1})}],
    )
    assert hook.get_user_info() == {"ok": 1}
    assert requests_mock.call_count == 2
    assert (hook.stats.requests, hook.stats.retries, hook.stats.rate_limited) == (2, 1, 1)


@pytest.mark.parametrize(
    "response",
    [
        {"status_code": 503, "text": "busy"},
        {"json": envelope(code=50000)},
        {"exc": __import__("requests").ConnectionError},
    ],
)
def test_transient_failures_are_retried(hook, requests_mock, response):
    requests_mock.get(BASE + "user/info/", [response, {"json": envelope({"ok": 1})}])
    assert hook.get_user_info() == {"ok": 1}
    assert requests_mock.call_count == 2


def test_retries_stop_after_the_attempt_limit_with_the_typed_error(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope(code=51003, message="busy"))
    with pytest.raises(TikTokTransientError) as caught:
        hook.get_user_info()
    assert requests_mock.call_count == 4
    assert caught.value.code == 51003 and caught.value.request_id == "req-1"
    assert caught.value.endpoint == "user/info/"


@pytest.mark.parametrize(
    ("code", "error"),
    [(40105, TikTokTokenError), (40001, TikTokPermissionError), (40002, TikTokBadRequestError)],
)
def test_fatal_and_bad_request_errors_are_raised_once_without_retry(hook, requests_mock, code, error):
    requests_mock.get(BASE + "user/info/", json=envelope(code=code, message="nope"))
    with pytest.raises(error):
        hook.get_user_info()
    assert requests_mock.call_count == 1


def test_token_error_tells_the_user_how_to_reauthorise(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope(code=40104, message="Access token is invalid"))
    with pytest.raises(TikTokTokenError, match=r"python -m airflow_provider_tiktok\.oauth"):
        hook.get_user_info()


def test_every_code_class_of_the_spec_is_classified():
    assert all(error_for_code(c, "").retryable for c in (40100, 40132, 61000, 50000, 50002, 51003, 51063, 60001))
    assert all(isinstance(error_for_code(c, ""), TikTokTokenError) for c in (40102, 40104, 40105, 40113))
    assert all(isinstance(error_for_code(c, ""), TikTokPermissionError) for c in (40001, 40003, 40130, 40300, 40301))
    assert all(isinstance(error_for_code(c, ""), TikTokBadRequestError) for c in (40000, 40002, 40007, 40061, 40062))
    assert isinstance(error_for_code(40100, ""), TikTokRateLimitError)


def test_audience_listing_walks_every_page(hook, requests_mock):
    pages = {
        1: envelope({"list": [{"audience_id": "1", "name": "a"}], "page_info": {"page": 1, "total_page": 3}}),
        2: envelope({"list": [{"audience_id": "2", "name": "b"}], "page_info": {"page": 2, "total_page": 3}}),
        3: envelope({"list": [{"audience_id": "3", "name": "b"}], "page_info": {"page": 3, "total_page": 3}}),
    }
    requests_mock.get(BASE + "dmp/custom_audience/list/", json=lambda request, _: pages[int(request.qs["page"][0])])
    assert [a["audience_id"] for a in hook.list_audiences("7001")] == ["1", "2", "3"]
    assert requests_mock.last_request.qs["page_size"] == ["100"]
    assert hook.find_audience("7001", audience_name="b")["audience_id"] == "2"
    assert hook.find_audience("7001", audience_name="zzz") is None


def test_audience_details_are_fetched_100_ids_at_a_time(hook, requests_mock):
    def respond(request, _):
        ids = json.loads(request.qs["custom_audience_ids"][0])
        return envelope({"list": [{"audience_details": {"audience_id": i}} for i in ids]})

    requests_mock.get(BASE + "dmp/custom_audience/get/", json=respond)
    details = hook.get_audiences("7001", [str(i) for i in range(250)])
    assert len(details) == 250 and requests_mock.call_count == 3


def test_mapping_guard_refuses_more_than_10000_users_before_sending(hook, requests_mock):
    requests_mock.post(BASE + "segment/mapping/", json=envelope())
    too_many = UserBatch(1, ("EMAIL_SHA256",), (pa.array(["a" * 64] * 10_001),))
    with pytest.raises(TikTokBadRequestError, match="10000"):
        hook.map_batch("add", "7001", ["9"], too_many)
    assert requests_mock.call_count == 0


def test_remove_sends_the_apis_delete_action_in_the_documented_shape(hook, requests_mock):
    requests_mock.post(BASE + "segment/mapping/", json=envelope())
    batch = UserBatch(1, ("EMAIL_SHA256", "PHONE_SHA256"), (pa.array(["a" * 64]), pa.array([None], pa.string())))
    hook.map_batch("remove", "7001", ["9"], batch)
    assert requests_mock.last_request.json() == {
        "advertiser_ids": ["7001"],
        "action": "delete",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [[{"id": "a" * 64, "audience_ids": ["9"]}, {}]],
    }


def test_create_audience_refuses_names_tiktok_would_truncate(hook, requests_mock):
    requests_mock.post(BASE + "segment/audience/", json=envelope({"audience_id": "55"}))
    assert hook.create_audience("7001", "Winback step 3") == "55"
    assert requests_mock.last_request.json()["custom_audience_name"] == "Winback step 3"
    with pytest.raises(TikTokConfigurationError, match="1-70 characters"):
        hook.create_audience("7001", "x" * 71)


def test_app_secret_is_sent_only_to_oauth_endpoints(hook, requests_mock):
    requests_mock.get(BASE + "oauth2/advertiser/get/", json=envelope({"list": [{"advertiser_id": "7001"}]}))
    requests_mock.get(BASE + "user/info/", json=envelope())
    requests_mock.get(BASE + "dmp/custom_audience/list/", json=envelope({"list": [], "page_info": {"total_page": 1}}))
    hook.list_advertisers()
    hook.get_user_info()
    hook.list_audiences("7001")
    carrying_secret = [r.path for r in requests_mock.request_history if SECRET in (r.url + (r.text or ""))]
    assert carrying_secret == ["/open_api/v1.3/oauth2/advertiser/get/"]


def test_secret_and_token_never_reach_errors_or_task_logs(hook, requests_mock, caplog):
    requests_mock.get(BASE + "oauth2/advertiser/get/", json=envelope(code=40001, message=f"bad secret {SECRET}"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TikTokPermissionError) as caught:
        hook.list_advertisers()
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert "bad secret ***" in str(caught.value)
    # Task logs pass through Airflow's secrets masker; the hook registered both values with it.
    hook.log.error("token %s secret %s", TOKEN, SECRET)
    assert caplog.records, "nothing was logged, so this test proves nothing"
    for record in caplog.records:
        shown = redact(record.getMessage())
        assert TOKEN not in shown and SECRET not in shown, shown
    assert TOKEN not in repr(hook) and SECRET not in repr(hook)
    shown_connection = redact(repr(hook.connection))
    assert TOKEN not in shown_connection and SECRET not in shown_connection


def test_plain_http_is_refused_except_on_loopback():
    assert validate_base_url(None) == PRODUCTION_BASE_URL
    assert validate_base_url("http://127.0.0.1:8765/open_api/v1.3") == "http://127.0.0.1:8765/open_api/v1.3/"
    assert validate_base_url("http://localhost:1/x/").startswith("http://localhost")
    assert validate_base_url("http://[::1]:8765/open_api/v1.3/") == "http://[::1]:8765/open_api/v1.3/"
    assert validate_base_url("business-api.tiktok.com/open_api/v1.3") == PRODUCTION_BASE_URL
    with pytest.raises(TikTokConfigurationError, match="plain http"):
        validate_base_url("http://api.example.com/open_api/v1.3/")


@pytest.mark.parametrize(
    "hostile",
    [
        "http://evil.example\\@127.0.0.1/open_api/v1.3/",  # urlparse sees 127.0.0.1, requests evil.example
        "http://evil.example\\127.0.0.1/",
        "http://user@127.0.0.1/open_api/v1.3/",
        "http://127.0.0.1@evil.example/",
        "http://user:pw@localhost:8765/",
        "http://127.0.0.1%2F@evil.example/",
        "http://%6c%6fcalhost/",
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://localhost.evil.com/",
        "http://localhost./",
        "http://127.0.0.1./",
        "http://[::ffff:7f00:1]x/",
        "http://[fe80::1]/",
        "http://127.0.0.1 .evil.com/",
        "http://127.0.0.1/open_api/v1.3/?next=http://evil.example/",
        "http://127.0.0.1/#@evil.example",
        "ftp://127.0.0.1/",
        "https://exa mple.com/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:99999/",
    ],
)
def test_hostile_base_urls_are_refused(hostile):
    with pytest.raises(TikTokConfigurationError, match="refused"):
        validate_base_url(hostile)


def test_a_connection_cut_mid_body_is_retried_inside_the_request(hook, requests_mock):
    requests_mock.get(
        BASE + "user/info/",
        [
            {"exc": requests.exceptions.ChunkedEncodingError("cut")},
            {"exc": requests.exceptions.ContentDecodingError},
            {"json": envelope({"ok": 1})},
        ],
    )
    assert hook.get_user_info() == {"ok": 1}
    assert hook.stats.retries == 2


def test_an_untrusted_certificate_fails_at_once_naming_host_and_remedy(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", exc=requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(Exception, match=r"api\.example\.test.*ca_bundle") as caught:
        hook.get_user_info()
    assert caught.value.fatal and requests_mock.call_count == 1


def test_ca_bundle_adds_trust_and_never_turns_verification_off(conn_env, tmp_path):
    import certifi

    bundle = tmp_path / "corp.pem"
    first_ca = Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0]
    bundle.write_text(first_ca + "-----END CERTIFICATE-----\n")
    conn_env(ca_bundle=str(bundle))
    session = TikTokHook("tiktok_test").get_conn()
    assert session.verify is True
    conn_env(ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(TikTokConfigurationError, match="ca_bundle"):
        TikTokHook("tiktok_test").get_conn()


def test_missing_token_fails_clearly(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_EMPTY", json.dumps({"conn_type": "tiktok", "host": BASE}))
    with pytest.raises(TikTokConfigurationError, match="no access token"):
        TikTokHook("tiktok_empty").get_user_info()


def test_test_connection_reports_advertisers_or_the_reason(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope())
    requests_mock.get(
        BASE + "oauth2/advertiser/get/",
        json=envelope({"list": [{"advertiser_id": "7001", "advertiser_name": "Shop"}]}),
    )
    assert hook.test_connection() == (True, "Token works; advertisers: 7001 (Shop)")
    requests_mock.get(BASE + "user/info/", json=envelope(code=40105, message="revoked"))
    ok, message = hook.test_connection()
    assert not ok and "40105" in message and "Re-authorise" in message


def test_unreachable_host_fails_test_connection(conn_env):
    conn_env(host="http://127.0.0.1:9/open_api/v1.3/")
    hook = TikTokHook("tiktok_test", request_retry_limit=1, timeout=(0.5, 0.5))
    ok, message = hook.test_connection()
    assert not ok and "ConnectionError" in message


def test_session_is_pooled_and_reused(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope())
    hook.get_user_info()
    first = hook.get_conn()
    hook.get_user_info()
    assert hook.get_conn() is first
    assert first.get_adapter(BASE)._pool_maxsize >= 32
    assert first.verify is True


def test_a_duplicate_whose_delete_answer_was_lost_is_not_an_error(hook, requests_mock):
    listings = [
        {"list": [], "page_info": {"total_page": 1}},
        {
            "list": [
                {"audience_id": "44", "name": "vip", "create_time": "1"},
                {"audience_id": "55", "name": "vip", "create_time": "2"},
            ],
            "page_info": {"total_page": 1},
        },
    ]
    requests_mock.get(BASE + "dmp/custom_audience/list/", [{"json": envelope(page)} for page in listings])
    answers = [
        {"json": envelope({"audience_id": "55"})},  # our create
        {"exc": requests.exceptions.ChunkedEncodingError("cut")},  # deleting our duplicate: applied, answer lost
        {"json": envelope(code=40002, message="Audience 55 does not exist")},  # the retry finds it gone
    ]
    requests_mock.post(BASE + "segment/audience/", answers)
    assert hook.create_audience_once("7001", "vip") == "44"
    assert [r.json()["action"] for r in requests_mock.request_history if r.method == "POST"] == [
        "create",
        "delete",
        "delete",
    ]


# --- several ad accounts in one request --------------------------------------------------------


def test_one_mapping_request_names_every_account_and_gives_each_user_every_audience(hook, requests_mock):
    requests_mock.post(BASE + "segment/mapping/", json=envelope())
    batch = UserBatch(1, ("EMAIL_SHA256", "PHONE_SHA256"), (pa.array(["a" * 64, None]), pa.array(["b" * 64] * 2)))
    hook.map_batch("add", ["7001", "7002"], ["9", "8"], batch)
    assert requests_mock.call_count == 1
    assert requests_mock.last_request.json() == {
        "advertiser_ids": ["7001", "7002"],
        "action": "add",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [
            [{"id": "a" * 64, "audience_ids": ["9", "8"]}, {"id": "b" * 64, "audience_ids": ["9", "8"]}],
            [{}, {"id": "b" * 64, "audience_ids": ["9", "8"]}],
        ],
    }


def test_a_vanished_audience_of_the_second_account_is_named_as_deleted(hook, requests_mock):
    requests_mock.post(BASE + "segment/mapping/", json=envelope(code=40002, message="Audience 8 does not belong"))

    def details(request, _):
        known = {("7001", "9")}  # the first account's audience is still there; the second's is gone
        advertiser, [audience] = request.qs["advertiser_id"][0], json.loads(request.qs["custom_audience_ids"][0])
        if (advertiser, audience) in known:
            return envelope({"list": [{"audience_details": {"audience_id": audience}}]})
        return envelope(code=40002, message="not found")

    lookups = requests_mock.get(BASE + "dmp/custom_audience/get/", json=details)
    batch = UserBatch(1, ("EMAIL_SHA256",), (pa.array(["a" * 64]),))
    with pytest.raises(TikTokAudienceDeletedError, match="audience 8 no longer exists") as caught:
        hook.map_batch("add", ["7001", "7002"], ["9", "8"], batch)
    assert caught.value.fatal
    asked = [(r.qs["advertiser_id"][0], json.loads(r.qs["custom_audience_ids"][0])[0]) for r in lookups.request_history]
    assert asked == [("7001", "9"), ("7002", "8")]  # each audience at its own account, once


def test_access_is_checked_for_every_account_with_one_listing(hook, requests_mock):
    requests_mock.get(BASE + "user/info/", json=envelope())
    listing = requests_mock.get(
        BASE + "oauth2/advertiser/get/",
        json=envelope({"list": [{"advertiser_id": "7001"}, {"advertiser_id": "7002"}]}),
    )
    hook.check_access(["7001", "7002"])
    assert listing.call_count == 1
    with pytest.raises(TikTokPermissionError, match="advertiser 7003 is not authorised"):
        hook.check_access(["7001", "7003"])
