"""FileUploader against requests-mock: file content, one file per batch, APPEND/REMOVE, creation from the first file."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokConfigurationError
from airflow_provider_tiktok.sync.file_upload import FileUploader, calculate_type_for, file_content
from tests.unit.sync.conftest import BASE, quick_retry_hook

ADVERTISER = "7001"


def envelope(data=None, code=0, message="OK"):
    return {"code": code, "message": message, "request_id": "req-1", "data": data or {}}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def hook(monkeypatch):
    return quick_retry_hook(monkeypatch, ADVERTISER)


@pytest.fixture
def api(requests_mock):
    """Uploads answer file paths f1, f2, ...; creations answer audience 55; the route mocks for assertions."""
    uploads = iter(range(1, 10_000))
    return {
        "upload": requests_mock.post(
            BASE + "dmp/custom_audience/file/upload/",
            json=lambda request, context: envelope({"file_path": f"f{next(uploads)}"}),
        ),
        "create": requests_mock.post(BASE + "dmp/custom_audience/create/", json=envelope({"custom_audience_id": "55"})),
        "update": requests_mock.post(BASE + "dmp/custom_audience/update/", json=envelope()),
    }


def emails(number: int, users: range) -> UserBatch:
    return UserBatch(number, ("EMAIL_SHA256",), (pa.array([sha(f"u{n}@x.io") for n in users]),))


def uploaded_file(request) -> bytes:
    body = request.body
    start = body.index(b"\r\n\r\n", body.index(b'name="file"')) + 4
    return body[start : body.index(b"\r\n--", start)]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (("EMAIL_SHA256",), "EMAIL_SHA256"),
        (("PHONE_SHA256",), "PHONE_SHA256"),
        (("AAID_SHA256",), "GAID_SHA256"),
        (("AAID_MD5",), "GAID_MD5"),
        (("IDFA_MD5",), "IDFA_MD5"),
        (("IDFA_SHA256", "AAID_SHA256"), "FIRST_SHA256"),
        (("IDFA_MD5", "AAID_MD5"), "FIRST_MD5"),
    ],
)
def test_calculate_type_of_each_id_schema(schema, expected):
    assert calculate_type_for(schema) == expected


@pytest.mark.parametrize("schema", [("EMAIL_SHA256", "PHONE_SHA256"), ("IDFA_SHA256", "AAID_MD5"), ()])
def test_mixed_id_types_are_refused_before_anything_is_sent(schema):
    with pytest.raises(TikTokConfigurationError, match="upload_method='segment'"):
        calculate_type_for(schema)


def test_file_holds_each_users_first_digest_one_a_line():
    idfa = pa.array([md5("a"), None, None])
    gaid = pa.array([md5("b"), md5("c"), None])
    batch = UserBatch(3, ("IDFA_MD5", "AAID_MD5"), (idfa, gaid))
    assert file_content(batch) == f"{md5('a')}\n{md5('c')}\n".encode()
    assert file_content(UserBatch(1, ("EMAIL_SHA256",), (pa.array([], pa.string()),))) == b""


def test_an_unknown_action_is_refused_before_uploading(hook, api):
    with pytest.raises(TikTokConfigurationError, match="'add' or 'remove'"):
        FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",)).send(emails(1, range(3)), "55", "delete")  # type: ignore[arg-type]
    assert api["upload"].call_count == 0


def test_add_uploads_one_file_per_batch_then_appends_it(hook, api):
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    uploader.send(emails(7, range(3)), "55", "add")
    [upload] = api["upload"].request_history
    assert uploaded_file(upload) == "".join(sha(f"u{n}@x.io") + "\n" for n in range(3)).encode()
    assert b'name="file_name"\r\n\r\nemail_sha256-batch-000007.txt' in upload.body
    assert "u0@x.io" not in upload.body.decode()  # only digests leave
    assert api["update"].last_request.json() == {
        "action": "APPEND",
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "55",
        "file_paths": ["f1"],
    }


def test_remove_sends_remove_and_a_retried_batch_is_uploaded_again(hook, api):
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    batch = emails(2, range(5))
    uploader.send(batch, "55", "remove")
    uploader.send(batch, "55", "remove")  # the engine's retry of the same batch
    assert [r.json()["action"] for r in api["update"].request_history] == ["REMOVE", "REMOVE"]
    assert [r.json()["file_paths"] for r in api["update"].request_history] == [["f1"], ["f2"]]
    assert uploaded_file(api["upload"].request_history[0]) == uploaded_file(api["upload"].request_history[1])


def test_audience_is_created_from_the_first_file_which_is_then_not_appended_again(hook, api, requests_mock):
    listings = [{"list": []}, {"list": []}, {"list": [{"audience_id": "55", "name": "vip"}]}]
    requests_mock.get(BASE + "dmp/custom_audience/list/", [{"json": envelope(page)} for page in listings])
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    first, second = emails(1, range(0, 10)), emails(2, range(10, 20))
    assert uploader.create_audience("vip", first) == "55"
    created = api["create"].last_request.json()
    assert (created["file_paths"], created["calculate_type"], created["custom_audience_name"]) == (
        ["f1"],
        "EMAIL_SHA256",
        "vip",
    )
    uploader.send(first, "55", "add")
    uploader.send(second, "55", "add")
    assert [r.json()["file_paths"] for r in api["update"].request_history] == [["f2"]]  # only the second batch


def test_when_another_task_created_the_audience_first_the_first_batch_is_appended_to_the_winner(
    hook, api, requests_mock
):
    listings = [
        {"list": []},  # one listing before creating: not there, and room for one more
        {
            "list": [
                {"audience_id": "44", "name": "vip", "create_time": "1"},
                {"audience_id": "55", "name": "vip", "create_time": "2"},
            ]
        },
    ]
    requests_mock.get(BASE + "dmp/custom_audience/list/", [{"json": envelope(page)} for page in listings])
    deleted = requests_mock.post(BASE + "segment/audience/", json=envelope())
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    first = emails(1, range(3))
    assert uploader.create_audience("vip", first) == "44"
    assert deleted.last_request.json()["delete_audience_id"] == ["55"]  # our duplicate goes
    uploader.send(first, "44", "add")
    assert api["update"].last_request.json()["custom_audience_id"] == "44"


def test_an_existing_audience_is_reused_without_uploading(hook, api, requests_mock):
    requests_mock.get(
        BASE + "dmp/custom_audience/list/", json=envelope({"list": [{"audience_id": "44", "name": "vip"}]})
    )
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    assert uploader.create_audience("vip", emails(1, range(3))) == "44"
    assert api["upload"].call_count == 0 and api["create"].call_count == 0
