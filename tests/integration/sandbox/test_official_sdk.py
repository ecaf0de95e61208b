"""TikTok's official Python SDK, as a client, against the emulator over real HTTP.

Every call the SDK makes must be understood and answered with code 0; every refusal TikTok documents must
come back in TikTok's error envelope (the SDK raises ``TiktokSDKError`` for any code other than 0).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from business_api_client import (
    ApiClient,
    AudienceApi,
    Configuration,
    CustomAudienceApplyBody,
    CustomAudienceCreateBody,
    CustomAudienceDeleteBody,
    CustomAudienceShareBody,
    CustomAudienceUpdateBody,
    DmpcustomAudiencelookalikecreateLookalikeSpec,
    InlineResponse200,
    LookalikeCreateBody,
    LookalikeUpdateBody,
    ShareCancelBody,
)
from business_api_client.tiktok_business.tiktok_exceptions import TiktokSDKError

OWNER, PARTNER = "7000000000001", "7000000000002"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digests(start: int, stop: int) -> list[str]:
    return [sha(f"user{n}@example.com") for n in range(start, stop)]


class Sdk:
    """The SDK's AudienceApi bound to an emulator, plus the file writing every upload needs."""

    def __init__(self, sandbox, folder: Path) -> None:
        configuration = Configuration()
        configuration.host = sandbox.root_url  # the SDK's paths start with /open_api/v1.3/
        self.api = AudienceApi(ApiClient(configuration))
        self.token = sandbox.access_token
        self.folder = folder

    def last_envelope_fields(self) -> set[str]:
        """The top-level fields of the last raw answer, to compare with the SDK's response model."""
        return set(json.loads(self.api.api_client.last_response.data))

    def upload(self, lines: list[str], calculate_type: str = "EMAIL_SHA256", signature: str | None = None) -> str:
        path = self.folder / f"file-{len(list(self.folder.iterdir()))}.txt"
        path.write_text("\n".join(lines) + "\n")
        answer = self.api.dmp_custom_audience_file_upload(
            self.token,
            advertiser_id=OWNER,
            calculate_type=calculate_type,
            file=str(path),
            file_name=path.name,
            file_signature=signature or hashlib.md5(path.read_bytes()).hexdigest(),
        )
        return answer["data"]["file_path"]

    def create(self, file_paths: list[str], name: str = "vip", calculate_type: str = "EMAIL_SHA256") -> str:
        body = CustomAudienceCreateBody(
            advertiser_id=OWNER,
            custom_audience_name=name,
            calculate_type=calculate_type,
            file_paths=file_paths,
            retention_in_days=180,
            audience_sub_type="NORMAL",
        )
        return self.api.dmp_custom_audience_create(self.token, body=body)["data"]["custom_audience_id"]

    def update(self, audience_id: str, action: str, file_paths: list[str]) -> dict:
        body = CustomAudienceUpdateBody(
            advertiser_id=OWNER, custom_audience_id=audience_id, action=action, file_paths=file_paths
        )
        return self.api.dmp_custom_audience_update(self.token, body=body)

    def details(self, audience_id: str, advertiser_id: str = OWNER) -> dict:
        answer = self.api.dmp_custom_audience_get(advertiser_id, [audience_id], self.token)
        return answer["data"]["list"][0]["audience_details"]

    def listed(self, advertiser_id: str = OWNER) -> list[dict]:
        return self.api.dmp_custom_audience_list(advertiser_id, self.token, page=1, page_size=100)["data"]["list"]

    def lookalike(self, seed_id: str, name: str = "vip lookalike") -> str:
        spec = DmpcustomAudiencelookalikecreateLookalikeSpec(
            source_audience_id=seed_id,
            audience_size="BALANCED",
            location_ids=["6252001"],
            include_source=False,
            mobile_os="ALL",
            placements=["TIKTOK"],
        )
        body = LookalikeCreateBody(advertiser_id=OWNER, custom_audience_name=name, lookalike_spec=spec)
        return self.api.dmp_custom_audience_lookalike_create(self.token, body=body)["data"]["custom_audience_id"]


def refused(call) -> tuple[int, str]:
    """The TikTok code and message of a call the SDK raised for."""
    with pytest.raises(TiktokSDKError) as raised:
        call()
    found = re.match(r"Error Code: (\d+), message: (.*), request_id: ", str(raised.value))
    assert found, str(raised.value)
    return int(found.group(1)), found.group(2)


@pytest.fixture
def two_advertisers(start_sandbox):
    return start_sandbox(advertiser_ids=[OWNER, PARTNER], valid_after_seconds=0)


@pytest.fixture
def sdk(two_advertisers, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    return Sdk(two_advertisers, folder)


def test_customer_file_audience_lifecycle_through_the_sdk(sdk, two_advertisers):
    sandbox = two_advertisers
    first = sdk.upload(["EMAIL_SHA256", *digests(0, 1200)])  # a header row is allowed
    audience_id = sdk.create([first])

    details = sdk.details(audience_id)
    assert details["cover_num"] == 1200 and details["is_valid"] is True
    assert details["calculate_type"] == "EMAIL_SHA256" and details["audience_type"] == "Customer File Audience"
    assert [a["audience_id"] for a in sdk.listed()] == [audience_id]
    assert sorted(sandbox.members(audience_id)) == sorted(digests(0, 1200))

    appended = sdk.update(audience_id, "APPEND", [sdk.upload(digests(1000, 1500))])
    assert set(appended) == {"data", "request_id"}
    assert sdk.last_envelope_fields() == set(InlineResponse200.swagger_types)
    assert sdk.details(audience_id)["cover_num"] == 1500
    sdk.update(audience_id, "REMOVE", [sdk.upload(digests(0, 300))])
    assert sorted(sandbox.members(audience_id)) == sorted(digests(300, 1500))
    sdk.update(audience_id, "REPLACE", [sdk.upload(digests(5000, 6000)), sdk.upload(digests(5500, 6100))])
    assert sorted(sandbox.members(audience_id)) == sorted(digests(5000, 6100))

    renamed = CustomAudienceUpdateBody(advertiser_id=OWNER, custom_audience_id=audience_id, custom_audience_name="v2")
    sdk.api.dmp_custom_audience_update(sdk.token, body=renamed)
    assert sdk.details(audience_id)["name"] == "v2"

    deleted = sdk.api.dmp_custom_audience_delete(
        sdk.token, body=CustomAudienceDeleteBody(advertiser_id=OWNER, custom_audience_ids=[audience_id])
    )
    assert set(deleted) == {"data", "request_id"}
    envelope = {"code", "message", "request_id", "data"}
    assert sdk.last_envelope_fields() == set(InlineResponse200.swagger_types) == envelope
    assert sdk.listed() == []
    assert sandbox.stats()["requests"]["dmp/custom_audience/file/upload/"] == {"0": 5}


def test_lookalike_share_and_apply_through_the_sdk(sdk, two_advertisers):
    sandbox = two_advertisers
    seed = sdk.create([sdk.upload(digests(0, 1000))], name="seed")
    lookalike = sdk.lookalike(seed)
    details = sdk.details(lookalike)
    assert details["audience_type"] == "Lookalike Audience" and details["cover_num"] == 5000
    assert details["lookalike_spec"]["source_audience_id"] == seed

    sdk.update(seed, "APPEND", [sdk.upload(digests(1000, 1100))])
    sdk.api.dmp_custom_audience_lookalike_update(
        sdk.token, body=LookalikeUpdateBody(advertiser_id=OWNER, custom_audience_ids=[lookalike])
    )
    assert sdk.details(lookalike)["cover_num"] == 5500

    share = CustomAudienceShareBody(advertiser_id=OWNER, custom_audience_ids=[seed], shared_advertiser_ids=[PARTNER])
    sdk.api.dmp_custom_audience_share(sdk.token, body=share)
    [seen] = sdk.listed(PARTNER)
    assert (seen["audience_id"], seen["is_creator"], seen["shared"]) == (seed, False, True)
    assert sdk.details(seed)["is_creator"] is True
    assert sandbox.audience(seed)["shared_with"] == [PARTNER]
    log = sdk.api.dmp_custom_audience_share_log(OWNER, seed, sdk.token)
    assert [row["shared_advertiser_id"] for row in log["data"]["list"]] == [PARTNER]

    cancel = ShareCancelBody(advertiser_id=OWNER, custom_audience_id=seed, shared_advertiser_id=PARTNER)
    sdk.api.dmp_custom_audience_share_cancel(sdk.token, body=cancel)
    assert sdk.listed(PARTNER) == []

    applied = CustomAudienceApplyBody(
        advertiser_id=OWNER,
        custom_audience_id=seed,
        adgroup_ids=["1800000000001"],
        action_mode="Apply",
        usage_mode="Include",
    )
    sdk.api.dmp_custom_audience_apply(sdk.token, body=applied)
    sandbox.set_adgroup("1800000000001", "DISABLE")
    log = sdk.api.dmp_custom_audience_apply_log(OWNER, [seed], sdk.token)
    assert [(r["adgroup_id"], r["usage_mode"], r["operation_status"]) for r in log["data"]["list"]] == [
        ("1800000000001", "Include", "DISABLE")
    ]
    assert sandbox.audience(seed)["adgroups"] == [
        {"adgroup_id": "1800000000001", "usage_mode": "Include", "status": "DISABLE"}
    ]


def test_documented_refusals_come_back_in_tiktoks_envelope(sdk, two_advertisers):
    emails = sdk.upload(digests(0, 1000))
    assert refused(lambda: sdk.upload(digests(0, 10), signature="0" * 32))[0] == 40002
    code, message = refused(lambda: sdk.upload(["jane@example.com"]))
    assert code == 40062 and "jane" not in message
    assert refused(lambda: sdk.create([emails], calculate_type="PHONE_SHA256"))[0] == 40002

    audience_id = sdk.create([emails])
    code, message = refused(lambda: sdk.update(audience_id, "REMOVE", [sdk.upload(digests(0, 1))]))
    assert code == 40002 and "999" in message
    assert refused(lambda: sdk.update(audience_id, "REPLACE", [sdk.upload(digests(0, 999))]))[0] == 40002
    assert len(two_advertisers.members(audience_id)) == 1000  # refused updates change nothing

    small_seed = sdk.create([sdk.upload(digests(0, 99))], name="small")
    assert refused(lambda: sdk.lookalike(small_seed))[0] == 40002
    lookalike = sdk.lookalike(audience_id)
    assert refused(lambda: sdk.lookalike(lookalike))[0] == 40002  # a lookalike cannot seed another

    too_many = CustomAudienceDeleteBody(advertiser_id=OWNER, custom_audience_ids=[audience_id] * 101)
    assert refused(lambda: sdk.api.dmp_custom_audience_delete(sdk.token, body=too_many))[0] == 40002
    outsider = CustomAudienceShareBody(
        advertiser_id=OWNER, custom_audience_ids=[audience_id], shared_advertiser_ids=["7999999999999"]
    )
    assert refused(lambda: sdk.api.dmp_custom_audience_share(sdk.token, body=outsider))[0] == 40002
    assert refused(lambda: sdk.api.dmp_custom_audience_list("7999999999999", sdk.token))[0] == 40001


def test_the_emulator_records_what_the_sdk_sent_for_comparison_with_other_clients(sdk, two_advertisers):
    file_path = sdk.upload(digests(0, 3))
    audience_id = sdk.create([file_path])
    sdk.details(audience_id)

    [upload] = two_advertisers.received("dmp/custom_audience/file/upload/")
    form = upload["form"]
    assert (upload["method"], upload["content_type"], upload["code"]) == ("POST", "multipart/form-data", 0)
    assert set(form) == {"advertiser_id", "calculate_type", "file", "file_name", "file_signature"}
    assert form["file"]["md5"] == form["file_signature"] and form["file"]["filename"] == form["file_name"]
    [create] = two_advertisers.received("dmp/custom_audience/create/")
    assert create["json"] == {
        "advertiser_id": OWNER,
        "audience_enhancement": False,  # the SDK model's default, sent even when not set
        "audience_sub_type": "NORMAL",
        "calculate_type": "EMAIL_SHA256",
        "custom_audience_name": "vip",
        "file_paths": [file_path],
        "retention_in_days": 180,
    }
    [get] = two_advertisers.received("dmp/custom_audience/get/")
    assert get["query"] == {"advertiser_id": OWNER, "custom_audience_ids": f'["{audience_id}"]'}
    two_advertisers.reset_stats()
    assert two_advertisers.received() == []
