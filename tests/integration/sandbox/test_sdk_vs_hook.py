"""Our hook and TikTok's official SDK send the same requests: one scenario, played by each client against its own
fresh emulator, and what each emulator received (``GET /_sandbox/requests``) compared call by call."""

from __future__ import annotations

import hashlib
import re
from contextlib import closing
from pathlib import Path

import pytest
from business_api_client import (
    ApiClient,
    AudienceApi,
    Configuration,
    CustomAudienceCreateBody,
    CustomAudienceDeleteBody,
    CustomAudienceShareBody,
    CustomAudienceUpdateBody,
    DmpcustomAudiencelookalikecreateLookalikeSpec,
    LookalikeCreateBody,
    LookalikeUpdateBody,
    ShareCancelBody,
)

from airflow_provider_tiktok.hooks.tiktok import TikTokHook

OWNER, PARTNER = "7000000000001", "7000000000002"
LOOKALIKE = {
    "audience_size": "BROAD",
    "location_ids": ["6252001", "2635167"],
    "include_source": True,
    "mobile_os": "IOS",
    "placements": ["TIKTOK", "PANGLE"],
}


def file_of(start: int, stop: int) -> bytes:
    return "".join(
        hashlib.sha256(f"user{n}@example.com".encode()).hexdigest() + "\n" for n in range(start, stop)
    ).encode()


class SdkClient:
    def __init__(self, sandbox, folder: Path) -> None:
        configuration = Configuration()
        configuration.host = sandbox.root_url
        self.api, self.token, self.folder = AudienceApi(ApiClient(configuration)), sandbox.access_token, folder

    def upload(self, content: bytes, file_name: str) -> str:
        path = self.folder / file_name
        path.write_bytes(content)
        signature = hashlib.md5(content).hexdigest()
        answer = self.api.dmp_custom_audience_file_upload(
            self.token,
            advertiser_id=OWNER,
            calculate_type="EMAIL_SHA256",
            file=str(path),
            file_name=file_name,
            file_signature=signature,
        )
        return answer["data"]["file_path"]

    def create(self, name: str, file_paths: list[str]) -> str:
        body = CustomAudienceCreateBody(
            advertiser_id=OWNER,
            custom_audience_name=name,
            calculate_type="EMAIL_SHA256",
            file_paths=file_paths,
            retention_in_days=180,
        )
        return self.api.dmp_custom_audience_create(self.token, body=body)["data"]["custom_audience_id"]

    def update(self, audience_id: str, action: str, file_paths: list[str]) -> None:
        body = CustomAudienceUpdateBody(
            advertiser_id=OWNER, custom_audience_id=audience_id, action=action, file_paths=file_paths
        )
        self.api.dmp_custom_audience_update(self.token, body=body)

    def rename(self, audience_id: str, name: str) -> None:
        body = CustomAudienceUpdateBody(advertiser_id=OWNER, custom_audience_id=audience_id, custom_audience_name=name)
        self.api.dmp_custom_audience_update(self.token, body=body)

    def lookalike(self, seed_id: str, name: str) -> str:
        spec = DmpcustomAudiencelookalikecreateLookalikeSpec(source_audience_id=seed_id, **LOOKALIKE)
        body = LookalikeCreateBody(advertiser_id=OWNER, custom_audience_name=name, lookalike_spec=spec)
        return self.api.dmp_custom_audience_lookalike_create(self.token, body=body)["data"]["custom_audience_id"]

    def refresh(self, audience_ids: list[str]) -> None:
        body = LookalikeUpdateBody(advertiser_id=OWNER, custom_audience_ids=audience_ids)
        self.api.dmp_custom_audience_lookalike_update(self.token, body=body)

    def share(self, audience_ids: list[str], targets: list[str]) -> None:
        body = CustomAudienceShareBody(
            advertiser_id=OWNER, custom_audience_ids=audience_ids, shared_advertiser_ids=targets
        )
        self.api.dmp_custom_audience_share(self.token, body=body)

    def cancel_share(self, audience_id: str, target: str) -> None:
        body = ShareCancelBody(advertiser_id=OWNER, custom_audience_id=audience_id, shared_advertiser_id=target)
        self.api.dmp_custom_audience_share_cancel(self.token, body=body)

    def delete(self, audience_ids: list[str]) -> None:
        body = CustomAudienceDeleteBody(advertiser_id=OWNER, custom_audience_ids=audience_ids)
        self.api.dmp_custom_audience_delete(self.token, body=body)


class HookClient:
    def __init__(self, hook: TikTokHook) -> None:
        self.hook = hook

    def upload(self, content: bytes, file_name: str) -> str:
        return self.hook.upload_audience_file(OWNER, "EMAIL_SHA256", content, file_name)

    def create(self, name: str, file_paths: list[str]) -> str:
        return self.hook.create_audience_from_files(OWNER, name, "EMAIL_SHA256", file_paths, retention_in_days=180)

    def update(self, audience_id: str, action: str, file_paths: list[str]) -> None:
        self.hook.update_audience_files(OWNER, audience_id, action, file_paths)  # type: ignore[arg-type]

    def rename(self, audience_id: str, name: str) -> None:
        self.hook.rename_audience(OWNER, audience_id, name)

    def lookalike(self, seed_id: str, name: str) -> str:
        return self.hook.create_lookalike(OWNER, name, seed_id, **LOOKALIKE)

    def refresh(self, audience_ids: list[str]) -> None:
        self.hook.refresh_lookalikes(OWNER, audience_ids)

    def share(self, audience_ids: list[str], targets: list[str]) -> None:
        self.hook.share_audiences(OWNER, audience_ids, targets)

    def cancel_share(self, audience_id: str, target: str) -> None:
        self.hook.cancel_share(OWNER, audience_id, target)

    def delete(self, audience_ids: list[str]) -> None:
        self.hook.delete_audiences(OWNER, audience_ids)


def play(client) -> None:
    """Every customer-file and lifecycle operation once, each answered with code 0 (else the client raises)."""
    seed_file = client.upload(file_of(0, 1200), "seed.txt")
    audience_id = client.create("VIP seed", [seed_file])
    client.update(audience_id, "APPEND", [client.upload(file_of(1200, 1500), "more.txt")])
    client.update(audience_id, "REMOVE", [client.upload(file_of(0, 100), "lapsed.txt")])
    client.update(audience_id, "REPLACE", [client.upload(file_of(2000, 3100), "all.txt"), seed_file])
    client.rename(audience_id, "VIP seed v2")
    lookalike_id = client.lookalike(audience_id, "VIP lookalike")
    client.refresh([lookalike_id])
    client.share([audience_id, lookalike_id], [PARTNER])
    client.cancel_share(audience_id, PARTNER)
    client.delete([lookalike_id, audience_id])


def received(sandbox) -> list[dict]:
    """What the emulator received, with each upload's random ``file_path`` named by its upload order."""
    calls = sandbox.received()
    uploads = [c for c in calls if c["endpoint"] == "dmp/custom_audience/file/upload/"]
    names = {}
    for call in calls:
        for path in (call.get("json") or {}).get("file_paths") or []:
            names.setdefault(path, f"<upload {len(names) + 1}>")
    assert len(names) == len(uploads)
    pattern = re.compile("|".join(re.escape(p) for p in names))
    return [_replace(call, pattern, names) for call in calls]


def _replace(value, pattern, names):
    if isinstance(value, dict):
        return {k: _replace(v, pattern, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, pattern, names) for v in value]
    return pattern.sub(lambda m: names[m.group(0)], value) if isinstance(value, str) else value


@pytest.fixture
def two_emulators(start_sandbox):
    return [start_sandbox(advertiser_ids=[OWNER, PARTNER], valid_after_seconds=0) for _ in range(2)]


def test_the_hook_sends_what_the_official_sdk_sends_for_every_lifecycle_operation(two_emulators, tmp_path):
    by_sdk, by_hook = two_emulators
    play(SdkClient(by_sdk, tmp_path))
    with closing(TikTokHook.for_base_url(by_hook.base_url, by_hook.access_token, request_retry_limit=1)) as hook:
        play(HookClient(hook))
    sdk_calls, hook_calls = received(by_sdk), received(by_hook)

    assert [c["endpoint"] for c in hook_calls] == [c["endpoint"] for c in sdk_calls]
    assert len(hook_calls) == 14 and all(c["code"] == 0 for c in sdk_calls + hook_calls)
    for sdk_call, hook_call in zip(sdk_calls, hook_calls, strict=True):
        body = sdk_call.get("json") or {}
        if sdk_call["endpoint"] == "dmp/custom_audience/update/" and "file_paths" not in body:
            # A rename: the SDK's model fills in its default action (REPLACE), which applies only to files.
            assert body.pop("action") == "REPLACE"
        assert hook_call == sdk_call, sdk_call["endpoint"]

    upload = hook_calls[0]
    assert (upload["content_type"], upload["form"]["file_name"]) == ("multipart/form-data", "seed.txt")
    assert upload["form"]["file"] == {
        "filename": "seed.txt",
        "size": len(file_of(0, 1200)),
        "md5": hashlib.md5(file_of(0, 1200)).hexdigest(),
    }
    assert upload["form"]["file_signature"] == upload["form"]["file"]["md5"]
    assert by_sdk.stats()["audiences"] == by_hook.stats()["audiences"] == {}  # both deleted what they made
