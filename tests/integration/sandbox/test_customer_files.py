"""The customer-file path and lifecycle rules the emulator enforces, driven with plain ``requests``."""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import zipfile

import pytest
import requests

from airflow_provider_tiktok.sandbox.process import SandboxProcess

A, B, C = "7000000000001", "7000000000002", "7000000000003"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digests(start: int, stop: int) -> list[str]:
    return [sha(f"user{n}") for n in range(start, stop)]


class Api:
    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self.session = requests.Session()
        self.session.headers["Access-Token"] = sandbox.access_token

    def post(self, endpoint: str, **body) -> dict:
        return self.session.post(self.sandbox.base_url + endpoint, json=body, timeout=30).json()

    def get(self, endpoint: str, **params) -> dict:
        return self.session.get(self.sandbox.base_url + endpoint, params=params, timeout=30).json()

    def upload(self, content: bytes, advertiser_id: str = A, calculate_type: str = "EMAIL_SHA256") -> dict:
        form = {
            "advertiser_id": advertiser_id,
            "calculate_type": calculate_type,
            "file_name": "ids.txt",
            "file_signature": hashlib.md5(content).hexdigest(),
        }
        answer = self.session.post(
            self.sandbox.base_url + "dmp/custom_audience/file/upload/",
            data=form,
            files={"file": ("ids.txt", content, "text/plain")},
            timeout=30,
        )
        return answer.json()

    def file_path(self, lines: list[str], advertiser_id: str = A) -> str:
        answer = self.upload(("\n".join(lines) + "\n").encode(), advertiser_id)
        assert answer["code"] == 0, answer
        return answer["data"]["file_path"]

    def create(self, file_paths: list[str], advertiser_id: str = A, name: str = "vip") -> dict:
        return self.post(
            "dmp/custom_audience/create/",
            advertiser_id=advertiser_id,
            custom_audience_name=name,
            calculate_type="EMAIL_SHA256",
            file_paths=file_paths,
        )

    def details(self, audience_id: str, advertiser_id: str = A) -> dict:
        ids = f'["{audience_id}"]'
        answer = self.get("dmp/custom_audience/get/", advertiser_id=advertiser_id, custom_audience_ids=ids)
        return answer["data"]["list"][0]["audience_details"]


@pytest.fixture
def api(start_sandbox):
    return Api(start_sandbox(advertiser_ids=[A, B, C], valid_after_seconds=0))


def test_gzip_and_zip_files_are_refused_as_tiktok_documents_only_txt_and_csv(api):
    text = ("\n".join(digests(0, 10)) + "\n").encode()
    assert api.upload(gzip.compress(text))["code"] == 40002
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("ids.txt", text)
    assert api.upload(packed.getvalue())["code"] == 40002
    assert api.upload(text.replace(b"\n", b"\r\n"))["code"] == 0  # Windows line ends are fine


def test_gzip_files_are_read_when_the_emulator_is_told_to_accept_them(start_sandbox):
    api = Api(start_sandbox(valid_after_seconds=0, accept_gzip_files=True, min_audience_size=1))
    uploaded = api.upload(gzip.compress(("\n".join(digests(0, 10)) + "\n").encode()))
    created = api.create([uploaded["data"]["file_path"]])
    assert sorted(api.sandbox.members(created["data"]["custom_audience_id"])) == sorted(digests(0, 10))


def test_wrong_width_or_upper_case_lines_are_refused_by_line_number_without_echoing_them(api):
    lines = digests(0, 3)
    answer = api.upload(("\n".join([*lines, lines[0].upper()])).encode())
    assert answer["code"] == 40062 and "Line 4" in answer["message"] and lines[0].upper() not in answer["message"]
    assert api.upload(b"\n".join(d.encode() for d in digests(0, 3)), calculate_type="IDFA_MD5")["code"] == 40062
    assert api.upload(b"", calculate_type="EMAIL_SHA256")["code"] == 40002
    assert api.upload(b"x", calculate_type="EMAIL")["code"] == 40002


def test_a_file_of_another_advertiser_cannot_build_an_audience(api):
    theirs = api.file_path(digests(0, 5), advertiser_id=B)
    assert api.create([theirs], advertiser_id=A)["code"] == 40002
    assert api.create([theirs], advertiser_id=B)["code"] == 0


def test_file_and_segment_members_share_one_store(api):
    created = api.post("segment/audience/", advertiser_id=A, action="create", custom_audience_name="mixed")
    audience_id = created["data"]["audience_id"]
    rows = [[{"id": sha("from mapping"), "audience_ids": [audience_id]}]]
    mapped = api.post("segment/mapping/", advertiser_ids=[A], action="add", id_schema=["EMAIL_SHA256"], batch_data=rows)
    assert mapped["code"] == 0
    appended = api.post(
        "dmp/custom_audience/update/",
        advertiser_id=A,
        custom_audience_id=audience_id,
        action="APPEND",
        file_paths=[api.file_path(digests(0, 1000))],
    )
    assert appended["code"] == 0
    assert sorted(api.sandbox.members(audience_id)) == sorted([sha("from mapping"), *digests(0, 1000)])
    assert api.details(audience_id)["cover_num"] == 1001


def test_an_updated_audience_is_recalculated_and_its_lookalikes_wait_for_it(start_sandbox):
    sandbox = start_sandbox(valid_after_seconds=1.0, min_audience_size=1, min_lookalike_seed=3)
    api = Api(sandbox)
    advertiser = sandbox.advertiser_id
    audience_id = api.create([api.file_path(digests(0, 5), advertiser)], advertiser_id=advertiser)["data"][
        "custom_audience_id"
    ]
    spec = {"source_audience_id": audience_id, "location_ids": ["6252001"]}
    lookalike = {"advertiser_id": advertiser, "custom_audience_name": "like", "lookalike_spec": spec}
    assert api.details(audience_id, advertiser)["is_valid"] is False
    assert api.post("dmp/custom_audience/lookalike/create/", **lookalike)["code"] == 40002
    time.sleep(1.1)
    assert api.details(audience_id, advertiser)["is_valid"] is True
    made = api.post("dmp/custom_audience/lookalike/create/", **lookalike)
    assert made["code"] == 0
    details = api.details(made["data"]["custom_audience_id"], advertiser)
    assert details["cover_num"] == 25 and details["lookalike_spec"]["audience_size"] == "BALANCED"
    replaced = api.post(
        "dmp/custom_audience/update/",
        advertiser_id=advertiser,
        custom_audience_id=audience_id,
        action="REPLACE",
        file_paths=[api.file_path(digests(10, 12), advertiser)],
    )
    assert replaced["code"] == 0
    after = api.details(audience_id, advertiser)
    assert (after["is_valid"], after["cover_num"]) == (False, 2)


def test_configured_business_centers_bound_sharing(start_sandbox):
    sandbox = start_sandbox(advertiser_ids=[A, B, C], valid_after_seconds=0, business_center=[f"{A},{B}", C])
    api = Api(sandbox)
    audience_id = api.create([api.file_path(digests(0, 3))])["data"]["custom_audience_id"]
    share = {"advertiser_id": A, "custom_audience_ids": [audience_id]}
    assert api.post("dmp/custom_audience/share/", **share, shared_advertiser_ids=[C])["code"] == 40002
    assert api.post("dmp/custom_audience/share/", **share, shared_advertiser_ids=[B])["code"] == 0
    assert api.post("dmp/custom_audience/share/", **share, shared_advertiser_ids=[A])["code"] == 40002
    # the recipient sees it, but cannot change or delete it
    assert api.details(audience_id, B)["is_creator"] is False
    delete = api.post("dmp/custom_audience/delete/", advertiser_id=B, custom_audience_ids=[audience_id])
    assert delete["code"] == 40002
    assert sandbox.audience(audience_id)["shared_with"] == [B]


def test_lifecycle_state_survives_a_restart(tmp_path):
    state = tmp_path / "kept.db"
    with SandboxProcess(state, advertiser_ids=[A, B], valid_after_seconds=0, min_lookalike_seed=1) as first:
        api = Api(first)
        seed = api.create([api.file_path(digests(0, 4))])["data"]["custom_audience_id"]
        spec = {"source_audience_id": seed, "location_ids": ["6252001"], "audience_size": "BROAD"}
        made = api.post(
            "dmp/custom_audience/lookalike/create/", advertiser_id=A, custom_audience_name="like", lookalike_spec=spec
        )
        api.post("dmp/custom_audience/share/", advertiser_id=A, custom_audience_ids=[seed], shared_advertiser_ids=[B])
    with SandboxProcess(state, advertiser_ids=[A, B], valid_after_seconds=0) as second:
        api = Api(second)
        assert api.details(seed)["calculate_type"] == "EMAIL_SHA256"
        assert api.details(made["data"]["custom_audience_id"])["cover_num"] == 40
        assert [a["audience_id"] for a in api.get("dmp/custom_audience/list/", advertiser_id=B)["data"]["list"]] == [
            seed
        ]
        assert sorted(second.members(seed)) == sorted(digests(0, 4))
