"""Dropped connections (before the answer, and mid-body) and sink mode, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import orjson
import pytest
import requests

from airflow_provider_tiktok.sandbox.process import SandboxProcess


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_audience(sandbox: SandboxProcess, name: str = "audience") -> str:
    body = {"advertiser_id": sandbox.advertiser_id, "action": "create", "custom_audience_name": name}
    answer = requests.post(
        sandbox.base_url + "segment/audience/", json=body, headers={"Access-Token": sandbox.access_token}, timeout=10
    )
    return answer.json()["data"]["audience_id"]


def mapping_body(sandbox: SandboxProcess, audience_id: str, rows: list, schema=("EMAIL_SHA256",), action="add"):
    body = {"advertiser_ids": [sandbox.advertiser_id], "action": action, "id_schema": list(schema), "batch_data": rows}
    return orjson.dumps(body)


def send_mapping(sandbox: SandboxProcess, raw: bytes, token: str | None = None) -> requests.Response:
    headers = {"Access-Token": sandbox.access_token if token is None else token, "Content-Type": "application/json"}
    return requests.post(sandbox.base_url + "segment/mapping/", data=raw, headers=headers, timeout=30)


def rows_for(audience_id: str, names: list[str]) -> list:
    return [[{"id": sha(name), "audience_ids": [audience_id]}] for name in names]


# --- dropped connections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "raised"),
    [
        ("mid_body", requests.exceptions.ChunkedEncodingError),
        ("before_response", requests.exceptions.ConnectionError),
    ],
)
def test_a_dropped_answer_was_applied_and_fails_the_client_the_way_its_mode_says(sandbox, mode, raised):
    audience_id = create_audience(sandbox)
    sandbox.set_faults(drop_connection_rate=1.0, drop_mode=mode)
    with pytest.raises(raised):
        send_mapping(sandbox, mapping_body(sandbox, audience_id, rows_for(audience_id, ["a", "b"])))
    sandbox.set_faults(drop_connection_rate=0.0)
    assert sorted(sandbox.members(audience_id)) == sorted([sha("a"), sha("b")])
    assert sandbox.stats()["requests"]["segment/mapping/"] == {"-2": 1}


def test_mixed_drops_cut_both_ways_and_leave_the_server_healthy(start_sandbox):
    sandbox = start_sandbox(valid_after_seconds=0, drop_connection_rate=1.0, drop_mode="mixed", seed=7)
    kinds = set()
    for _ in range(12):
        try:
            requests.get(sandbox.base_url + "user/info/", headers={"Access-Token": sandbox.access_token}, timeout=10)
        except requests.exceptions.RequestException as err:
            kinds.add(type(err))
    assert kinds == {requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError}
    sandbox.set_faults(drop_connection_rate=0.0)
    answer = requests.get(sandbox.base_url + "user/info/", headers={"Access-Token": sandbox.access_token}, timeout=10)
    assert answer.json()["code"] == 0
    sandbox.stop()
    assert list(sandbox.log) == []  # a drop is not a server error: nothing logged, no pipe to fill


def test_aiohttp_sees_a_mid_body_drop_as_a_payload_error(start_sandbox):
    sandbox = start_sandbox(valid_after_seconds=0, drop_connection_rate=1.0, drop_mode="mid_body")

    async def fetch() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(sandbox.base_url + "user/info/", headers={"Access-Token": sandbox.access_token}) as r,
        ):
            assert r.status == 200  # the status line arrived; the body did not
            await r.read()

    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(fetch())


def test_unknown_drop_mode_is_refused_and_changes_nothing(sandbox):
    with pytest.raises(requests.HTTPError):
        sandbox.set_faults(drop_connection_rate=0.5, drop_mode="sideways")
    faults = sandbox.admin.get(f"{sandbox.root_url}/_sandbox/faults", timeout=10).json()
    assert (faults["drop_connection_rate"], faults["drop_mode"]) == (0.0, "mid_body")


# --- sink mode ---------------------------------------------------------------------------------


@pytest.fixture
def sink(start_sandbox):
    return start_sandbox(valid_after_seconds=0, mapping_mode="sink", advertiser_ids=["111", "222"])


def test_sink_mode_acknowledges_good_bodies_counts_users_and_stores_no_member(sink):
    audience_id = create_audience(sink)
    compact = mapping_body(sink, audience_id, rows_for(audience_id, [str(n) for n in range(10_000)]))
    assert send_mapping(sink, compact).json()["code"] == 0
    indented = json.dumps(orjson.loads(mapping_body(sink, audience_id, rows_for(audience_id, ["x", "y"]))), indent=2)
    assert send_mapping(sink, indented.encode()).json()["code"] == 0
    two_ids = [[{"id": sha("p"), "audience_ids": [audience_id]}, {}]]
    assert (
        send_mapping(sink, mapping_body(sink, audience_id, two_ids, ("EMAIL_SHA256", "PHONE_SHA256"))).json()["code"]
        == 0
    )
    removed = mapping_body(sink, audience_id, rows_for(audience_id, ["x"]), action="delete")
    assert send_mapping(sink, removed).json()["code"] == 0

    stats = sink.stats()
    assert stats["mapping_mode"] == "sink"
    assert stats["mapped_users"] == {"add": 10_003, "delete": 1}
    assert stats["audiences"][audience_id] == {"name": "audience", "members": 0, "received": 10_003}
    assert sink.members(audience_id) == []


def test_sink_mode_still_refuses_what_strict_mode_refuses(sink):
    audience_id = create_audience(sink)
    good = rows_for(audience_id, ["a"])
    misaligned = [[{"id": sha("a"), "audience_ids": [audience_id]}, {}]]
    assert send_mapping(sink, mapping_body(sink, audience_id, misaligned)).json()["code"] == 40002
    too_many = rows_for(audience_id, [str(n) for n in range(10_001)])
    assert send_mapping(sink, mapping_body(sink, audience_id, too_many)).json()["code"] == 40061
    unhashed = [[{"id": "jane@example.com", "audience_ids": [audience_id]}]]
    assert send_mapping(sink, mapping_body(sink, audience_id, unhashed)).json()["code"] == 40062
    md5_in_sha_column = [[{"id": hashlib.md5(b"a").hexdigest(), "audience_ids": [audience_id]}]]
    assert send_mapping(sink, mapping_body(sink, audience_id, md5_in_sha_column)).json()["code"] == 40062
    assert send_mapping(sink, mapping_body(sink, audience_id, good), token="wrong").json()["code"] == 40105
    assert send_mapping(sink, b'{"advertiser_ids": ["111"]').json()["code"] == 40002
    other = create_audience(sink)
    body = orjson.loads(mapping_body(sink, other, rows_for(other, ["a"])))
    body["advertiser_ids"] = ["222"]  # an audience of 111, sent as 222's
    assert send_mapping(sink, orjson.dumps(body)).json()["code"] == 40002
    assert sink.stats()["mapped_users"] == {"add": 0, "delete": 0}


def test_strict_mode_is_the_default_and_counts_users_too(sandbox):
    audience_id = create_audience(sandbox)
    assert (
        send_mapping(sandbox, mapping_body(sandbox, audience_id, rows_for(audience_id, ["a", "b"]))).json()["code"] == 0
    )
    stats = sandbox.stats()
    assert stats["mapping_mode"] == "strict" and stats["mapped_users"] == {"add": 2, "delete": 0}
    assert len(sandbox.members(audience_id)) == 2
