"""TikTokHook's customer-file and lifecycle calls against requests-mock: shapes, multipart, chunking, errors."""

from __future__ import annotations

import hashlib
import json
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from airflow_provider_tiktok.exceptions import TikTokBadRequestError, TikTokConfigurationError
from airflow_provider_tiktok.hooks.tiktok import TikTokHook

BASE = "https://api.example.test/open_api/v1.3/"
TOKEN = "tok-ABCDEF-123456"
ADVERTISER = "7001"


def envelope(data=None, code=0, message="OK"):
    return {"code": code, "message": message, "request_id": "req-1", "data": data or {}}


@pytest.fixture
def hook(monkeypatch):
    extras = {"advertiser_id": ADVERTISER}
    monkeypatch.setenv(
        "AIRFLOW_CONN_TIKTOK_TEST",
        json.dumps({"conn_type": "tiktok", "host": BASE, "password": TOKEN, "extra": extras}),
    )
    return TikTokHook("tiktok_test", request_retry_min_wait=0.001, request_retry_max_wait=0.002, request_retry_limit=3)


def multipart(request) -> dict:
    """The form fields of a multipart request; a file as (file name, content)."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    fields = {}
    for part in message.iter_parts():
        name, content = part.get_param("name", header="content-disposition"), part.get_payload(decode=True)
        fields[name] = (part.get_filename(), content) if part.get_filename() else content.decode()
    return fields


def test_file_upload_is_multipart_with_the_md5_signature_and_retries_the_same_body(hook, requests_mock):
    content = b"a" * 64 + b"\n" + b"b" * 64 + b"\n"
    route = requests_mock.post(
        BASE + "dmp/custom_audience/file/upload/",
        [{"json": envelope(code=50000)}, {"json": envelope({"file_path": "files/1"})}],
    )
    assert hook.upload_audience_file(ADVERTISER, "EMAIL_SHA256", content, "email_sha256-batch-000001.txt") == "files/1"
    assert route.call_count == 2  # a transient answer is retried with the whole multipart body again
    for request in route.request_history:
        assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
        assert request.headers["Access-Token"] == TOKEN
        assert multipart(request) == {
            "advertiser_id": ADVERTISER,
            "calculate_type": "EMAIL_SHA256",
            "file_name": "email_sha256-batch-000001.txt",
            "file_signature": hashlib.md5(content).hexdigest(),
            "file": ("email_sha256-batch-000001.txt", content),
        }


def test_json_calls_keep_the_json_content_type_after_a_multipart_one(hook, requests_mock):
    requests_mock.post(BASE + "dmp/custom_audience/file/upload/", json=envelope({"file_path": "files/1"}))
    create = requests_mock.post(BASE + "dmp/custom_audience/create/", json=envelope({"custom_audience_id": "55"}))
    file_path = hook.upload_audience_file(ADVERTISER, "PHONE_SHA256", b"c" * 64 + b"\n", "f.txt")
    assert hook.create_audience_from_files(ADVERTISER, "vip", "PHONE_SHA256", [file_path], retention_in_days=30) == "55"
    assert create.last_request.headers["Content-Type"] == "application/json"
    assert create.last_request.json() == {
        "advertiser_id": ADVERTISER,
        "audience_enhancement": False,
        "audience_sub_type": "NORMAL",
        "calculate_type": "PHONE_SHA256",
        "custom_audience_name": "vip",
        "file_paths": ["files/1"],
        "retention_in_days": 30,
    }


def test_create_leaves_out_an_unset_retention_as_the_sdk_does(hook, requests_mock):
    create = requests_mock.post(BASE + "dmp/custom_audience/create/", json=envelope({"custom_audience_id": "55"}))
    hook.create_audience_from_files(ADVERTISER, "vip", "EMAIL_SHA256", ["f"])
    assert "retention_in_days" not in create.last_request.json()


def test_update_rename_and_refusals(hook, requests_mock):
    update = requests_mock.post(BASE + "dmp/custom_audience/update/", json=envelope())
    hook.update_audience_files(ADVERTISER, "55", "REMOVE", ["f1", "f2"])
    assert update.last_request.json() == {
        "action": "REMOVE",
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "55",
        "file_paths": ["f1", "f2"],
    }
    hook.rename_audience(ADVERTISER, "55", "vip v2")
    assert update.last_request.json() == {
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "55",
        "custom_audience_name": "vip v2",
    }
    with pytest.raises(TikTokConfigurationError, match="APPEND, REMOVE, REPLACE"):
        hook.update_audience_files(ADVERTISER, "55", "add", ["f1"])  # type: ignore[arg-type]
    with pytest.raises(TikTokConfigurationError, match="1-70 characters"):
        hook.rename_audience(ADVERTISER, "55", "x" * 71)
    assert update.call_count == 2

    requests_mock.post(
        BASE + "dmp/custom_audience/update/",
        json=envelope(code=40002, message="REMOVE would leave the audience with 999 members, below the minimum 1000."),
    )
    with pytest.raises(TikTokBadRequestError, match="below the minimum 1000"):
        hook.update_audience_files(ADVERTISER, "55", "REMOVE", ["f1"])


def test_delete_is_chunked_by_100(hook, requests_mock):
    delete = requests_mock.post(BASE + "dmp/custom_audience/delete/", json=envelope())
    ids = [str(n) for n in range(250)]
    hook.delete_audiences(ADVERTISER, ids)
    sent = [r.json()["custom_audience_ids"] for r in delete.request_history]
    assert [len(chunk) for chunk in sent] == [100, 100, 50]
    assert [i for chunk in sent for i in chunk] == ids


def test_lookalike_create_and_refresh(hook, requests_mock):
    create = requests_mock.post(
        BASE + "dmp/custom_audience/lookalike/create/", json=envelope({"custom_audience_id": "77"})
    )
    refresh = requests_mock.post(BASE + "dmp/custom_audience/lookalike/update/", json=envelope())
    assert (
        hook.create_lookalike(ADVERTISER, "vip lookalike", "55", location_ids=[6252001], audience_size="BROAD") == "77"
    )
    assert create.last_request.json() == {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "vip lookalike",
        "lookalike_spec": {
            "audience_size": "BROAD",
            "include_source": False,
            "location_ids": ["6252001"],
            "mobile_os": "ALL",
            "placements": ["TIKTOK"],
            "source_audience_id": "55",
        },
    }
    with pytest.raises(TikTokConfigurationError, match="location"):
        hook.create_lookalike(ADVERTISER, "x", "55", location_ids=[])
    hook.refresh_lookalikes(ADVERTISER, ["77"])
    assert refresh.last_request.json() == {"advertiser_id": ADVERTISER, "custom_audience_ids": ["77"]}


def test_share_is_chunked_by_10_on_both_sides_and_cancel_names_one_pair(hook, requests_mock):
    share = requests_mock.post(BASE + "dmp/custom_audience/share/", json=envelope())
    cancel = requests_mock.post(BASE + "dmp/custom_audience/share/cancel/", json=envelope())
    audiences = [f"a{n}" for n in range(12)]
    targets = [f"t{n}" for n in range(11)]
    hook.share_audiences(ADVERTISER, audiences, targets)
    bodies = [r.json() for r in share.request_history]
    assert len(bodies) == 4
    assert all(len(b["custom_audience_ids"]) <= 10 and len(b["shared_advertiser_ids"]) <= 10 for b in bodies)
    pairs = {(a, t) for b in bodies for a in b["custom_audience_ids"] for t in b["shared_advertiser_ids"]}
    assert pairs == {(a, t) for a in audiences for t in targets}
    hook.cancel_share(ADVERTISER, "a1", "t1")
    assert cancel.last_request.json() == {
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "a1",
        "shared_advertiser_id": "t1",
    }


def test_active_adgroups_reads_every_page_of_the_apply_log_and_keeps_enabled_applications(hook, requests_mock):
    rows = [
        {"custom_audience_id": "55", "adgroup_id": "g1", "action": "APPLY", "operation_status": "ENABLE"},
        {"custom_audience_id": "55", "adgroup_id": "g2", "action": "APPLY", "operation_status": "DISABLE"},
    ]
    more = [{"custom_audience_id": "56", "adgroup_id": "g3", "action": "APPLY", "operation_status": "ENABLE"}]
    log = requests_mock.get(
        BASE + "dmp/custom_audience/apply/log/",
        [
            {"json": envelope({"list": rows, "page_info": {"page": 1, "total_page": 2}})},
            {"json": envelope({"list": more, "page_info": {"page": 2, "total_page": 2}})},
        ],
    )
    assert hook.active_adgroups(ADVERTISER, ["55", "56", "57"]) == {"55": ["g1"], "56": ["g3"]}
    assert log.request_history[0].qs["custom_audience_ids"] == ['["55", "56", "57"]']
    assert [r.qs["page"] for r in log.request_history] == [["1"], ["2"]]
