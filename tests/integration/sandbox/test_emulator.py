"""The emulator enforces TikTok's rules with TikTok's codes, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from airflow_provider_tiktok.sandbox.process import SandboxProcess


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Api:
    def __init__(self, sandbox: SandboxProcess, token: str | None = None):
        self.sandbox = sandbox
        self.session = requests.Session()
        self.token = sandbox.access_token if token is None else token

    def call(self, method: str, endpoint: str, **kwargs) -> dict:
        headers = {"Access-Token": self.token} if self.token else {}
        response = self.session.request(method, self.sandbox.base_url + endpoint, headers=headers, timeout=30, **kwargs)
        return response.json()

    def create(self, name: str = "audience", advertiser: str | None = None) -> dict:
        body = {
            "advertiser_id": advertiser or self.sandbox.advertiser_id,
            "action": "create",
            "custom_audience_name": name,
        }
        return self.call("POST", "segment/audience/", json=body)

    def mapping(self, audience_id: str, rows: list, schema=("EMAIL_SHA256",), action="add", advertiser=None) -> dict:
        body = {
            "advertiser_ids": [advertiser or self.sandbox.advertiser_id],
            "action": action,
            "id_schema": list(schema),
            "batch_data": rows,
        }
        return self.call("POST", "segment/mapping/", json=body)


def cell(digest: str, audience_id: str) -> dict:
    return {"id": digest, "audience_ids": [audience_id]}


@pytest.fixture
def api(sandbox):
    return Api(sandbox)


def test_membership_is_a_set_and_delete_removes(api, sandbox):
    audience_id = api.create()["data"]["audience_id"]
    rows = [[cell(sha("a"), audience_id)], [cell(sha("b"), audience_id)]]
    assert api.mapping(audience_id, rows)["code"] == 0
    assert api.mapping(audience_id, rows[:1])["code"] == 0
    assert sorted(sandbox.members(audience_id)) == sorted([sha("a"), sha("b")])
    assert sandbox.stats()["audiences"][audience_id] == {"name": "audience", "members": 2, "received": 3}
    assert api.mapping(audience_id, rows[:1], action="delete")["code"] == 0
    assert sandbox.members(audience_id) == [sha("b")]


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "keep.db"
    with SandboxProcess(state, valid_after_seconds=0) as first:
        api = Api(first)
        audience_id = api.create("kept")["data"]["audience_id"]
        api.mapping(audience_id, [[cell(sha("x"), audience_id)]])
        token = first.access_token
    with SandboxProcess(state, valid_after_seconds=0) as second:
        assert second.members(audience_id) == [sha("x")]
        listed = Api(second, token).call(
            "GET", "dmp/custom_audience/list/", params={"advertiser_id": second.advertiser_id}
        )
        assert [(a["name"], a["cover_num"]) for a in listed["data"]["list"]] == [("kept", 1)]


@pytest.mark.parametrize(("token", "code"), [("", 40104), ("wrong-token", 40105)])
def test_missing_or_unknown_token(sandbox, token, code):
    assert Api(sandbox, token).call("GET", "user/info/")["code"] == code


def test_revoked_token_is_refused(api, sandbox):
    assert api.call("GET", "user/info/")["code"] == 0
    assert sandbox.revoke()
    assert api.call("GET", "user/info/")["code"] == 40105


def test_advertiser_not_authorised_for_the_token(api):
    assert api.create(advertiser="999")["code"] == 40001
    assert api.call("GET", "dmp/custom_audience/list/", params={"advertiser_id": "999"})["code"] == 40001


def test_more_than_50_requests_in_one_second_are_rate_limited(api, sandbox):
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: api.call("GET", "user/info/")["code"], range(80)))
    assert codes.count(0) == 50 and codes.count(40100) == 30
    time.sleep(1.05)
    assert api.call("GET", "user/info/")["code"] == 0
    assert sandbox.stats()["peak_admitted_per_second"] == 50


def test_mapping_payload_rules(api):
    audience_id = api.create()["data"]["audience_id"]
    good = cell(sha("a"), audience_id)
    assert api.mapping(audience_id, [[good]] * 10_001)["code"] == 40061
    assert api.mapping(audience_id, [[good]], schema=("EMAIL_MD5",))["code"] == 40002
    assert api.mapping(audience_id, [[good, good]], schema=("EMAIL_SHA256", "EMAIL_SHA256"))["code"] == 40002
    assert api.mapping(audience_id, [[good, {}]])["code"] == 40002
    assert api.mapping(audience_id, [[cell("jane@example.com", audience_id)]])["code"] == 40062
    assert api.mapping(audience_id, [[cell(sha("a").upper(), audience_id)]])["code"] == 40062
    md5 = hashlib.md5(b"x").hexdigest()
    assert api.mapping(audience_id, [[cell(md5, audience_id)]], schema=("IDFA_SHA256",))["code"] == 40062
    assert api.mapping(audience_id, [[cell(md5, audience_id)]], schema=("IDFA_MD5",))["code"] == 0
    assert api.mapping(audience_id, [[{}, good]], schema=("PHONE_SHA256", "EMAIL_SHA256"))["code"] == 0


def test_audience_of_another_advertiser_is_refused(start_sandbox):
    sandbox = start_sandbox(advertiser_ids=["111", "222"], valid_after_seconds=0)
    api = Api(sandbox)
    foreign = api.create(advertiser="222")["data"]["audience_id"]
    assert api.mapping(foreign, [[cell(sha("a"), foreign)]], advertiser="111")["code"] == 40002


def test_the_401st_audience_is_refused(api):
    for number in range(400):
        assert api.create(f"a{number}")["code"] == 0
        if number % 45 == 44:
            time.sleep(1.0)  # stay under the rate limit
    time.sleep(1.0)
    refused = api.create("one too many")
    assert refused["code"] == 40002 and "400" in refused["message"]


def test_long_names_are_cut_to_70_characters_and_lists_are_paged(api, sandbox):
    api.create("n" * 80)
    for number in range(4):
        api.create(f"p{number}")
    page = api.call(
        "GET",
        "dmp/custom_audience/list/",
        params={"advertiser_id": sandbox.advertiser_id, "page": 2, "page_size": 2},
    )
    assert page["data"]["page_info"] == {"page": 2, "page_size": 2, "total_number": 5, "total_page": 3}
    assert [a["name"] for a in page["data"]["list"]] == ["p1", "p2"]
    first = api.call(
        "GET",
        "dmp/custom_audience/list/",
        params={"advertiser_id": sandbox.advertiser_id, "page": 1, "page_size": 1},
    )
    assert first["data"]["list"][0]["name"] == "n" * 70
    assert (
        api.call(
            "GET",
            "dmp/custom_audience/list/",
            params={"advertiser_id": sandbox.advertiser_id, "page_size": 101},
        )["code"]
        == 40002
    )


def test_new_audience_is_invalid_until_its_delay_passes_and_size_is_member_count(start_sandbox):
    sandbox = start_sandbox(valid_after_seconds=1.5)
    api = Api(sandbox)
    audience_id = api.create()["data"]["audience_id"]
    api.mapping(audience_id, [[cell(sha(str(i)), audience_id)] for i in range(7)])

    def details():
        got = api.call(
            "GET",
            "dmp/custom_audience/get/",
            params={"advertiser_id": sandbox.advertiser_id, "custom_audience_ids": f'["{audience_id}"]'},
        )
        return got["data"]["list"][0]["audience_details"]

    assert details()["is_valid"] is False and details()["cover_num"] == 7
    time.sleep(1.6)
    assert details()["is_valid"] is True


def test_deleted_audience_is_gone(api, sandbox):
    audience_id = api.create()["data"]["audience_id"]
    deleted = api.call(
        "POST",
        "segment/audience/",
        json={
            "advertiser_id": sandbox.advertiser_id,
            "action": "delete",
            "delete_audience_id": [audience_id],
        },
    )
    assert deleted["code"] == 0
    assert api.mapping(audience_id, [[cell(sha("a"), audience_id)]])["code"] == 40002


def test_oauth_exchanges_issued_codes_once(sandbox):
    code = sandbox.issue_auth_code()
    api = Api(sandbox, token="")
    body = {"app_id": sandbox.app_id, "secret": sandbox.app_secret, "auth_code": code}
    granted = api.call("POST", "oauth2/access_token/", json=body)
    assert granted["code"] == 0 and granted["data"]["advertiser_ids"] == [sandbox.advertiser_id]
    assert api.call("POST", "oauth2/access_token/", json=body)["code"] == 40000
    assert api.call("POST", "oauth2/access_token/", json={**body, "secret": "wrong"})["code"] == 40001
    new = Api(sandbox, granted["data"]["access_token"])
    listed = new.call("GET", "oauth2/advertiser/get/", params={"app_id": sandbox.app_id, "secret": sandbox.app_secret})
    assert listed["data"]["list"][0]["advertiser_id"] == sandbox.advertiser_id


def test_latency_is_injected(start_sandbox):
    api = Api(start_sandbox(latency_ms=300))
    started = time.monotonic()
    assert api.call("GET", "user/info/")["code"] == 0
    assert time.monotonic() - started >= 0.3


def test_transient_errors_come_as_50000_and_http_503(start_sandbox):
    sandbox = start_sandbox(transient_error_rate=1.0, seed=3)
    api = Api(sandbox)
    statuses = set()
    for _ in range(20):
        response = api.session.get(sandbox.base_url + "user/info/", headers={"Access-Token": sandbox.access_token})
        statuses.add(response.status_code if response.status_code != 200 else response.json()["code"])
    assert statuses == {503, 50000}


def test_forced_rate_limit_period_at_run_time(api, sandbox):
    sandbox.set_faults(rate_limit_for_seconds=1.0)
    assert api.call("GET", "user/info/")["code"] == 40100
    time.sleep(1.1)
    assert api.call("GET", "user/info/")["code"] == 0
    assert sandbox.stats()["requests"]["user/info/"] == {"40100": 1, "0": 1}


def test_dropped_connection_mid_reply_after_applying(api, sandbox):
    audience_id = api.create()["data"]["audience_id"]
    sandbox.set_faults(drop_connection_rate=1.0)
    with pytest.raises(requests.exceptions.RequestException):
        api.mapping(audience_id, [[cell(sha("a"), audience_id)]])
    sandbox.set_faults(drop_connection_rate=0.0)
    assert sandbox.members(audience_id) == [sha("a")]


def test_unknown_fault_is_rejected_by_the_admin_route(sandbox):
    with pytest.raises(requests.HTTPError):
        sandbox.set_faults(explode=1)


def test_port_in_use_gives_a_clear_error(sandbox, tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_provider_tiktok.sandbox",
            "--port",
            str(sandbox.port),
            "--state",
            str(tmp_path / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "already in use" in done.stderr


def test_one_mapping_reaches_the_audiences_of_every_listed_advertiser_and_no_other(start_sandbox):
    sandbox = start_sandbox(advertiser_ids=["111", "222"], valid_after_seconds=0)
    api = Api(sandbox)
    mine, theirs = (api.create(advertiser=a)["data"]["audience_id"] for a in ("111", "222"))
    rows = [[{"id": sha("a"), "audience_ids": [mine, theirs]}], [{"id": sha("b"), "audience_ids": [mine, theirs]}]]

    def mapping(advertisers: list[str]) -> dict:
        body = {"advertiser_ids": advertisers, "action": "add", "id_schema": ["EMAIL_SHA256"], "batch_data": rows}
        return api.call("POST", "segment/mapping/", json=body)

    assert mapping(["111"])["code"] == 40002  # 222's audience, but 222 is not listed
    assert mapping(["111", "222", "333"])["code"] == 40001  # the token may not act for 333
    assert sandbox.members(mine) == [] and sandbox.members(theirs) == []  # refused requests change nothing
    assert mapping(["111", "222"])["code"] == 0
    assert sandbox.members(mine) == sandbox.members(theirs) == sorted([sha("a"), sha("b")])
