"""FileUploader, the customer-file sender, against the real emulator: members are exactly the expected digests."""

from __future__ import annotations

import hashlib
import uuid
from contextlib import closing

import pyarrow as pa
import pytest

from airflow_provider_tiktok.audience.batching import UserBatch
from airflow_provider_tiktok.exceptions import TikTokBadRequestError
from airflow_provider_tiktok.hooks.tiktok import TikTokHook
from airflow_provider_tiktok.sync.file_upload import FileUploader

ADVERTISER = "7000000000001"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def email_digests(users: range) -> list[str]:
    return [sha(f"member{n}@example.com") for n in users]


def emails(number: int, users: range) -> UserBatch:
    return UserBatch(number, ("EMAIL_SHA256",), (pa.array(email_digests(users)),))


@pytest.fixture
def hook(sandbox):
    with closing(TikTokHook.for_base_url(sandbox.base_url, sandbox.access_token, request_retry_limit=1)) as hook:
        yield hook


def test_add_then_remove_leaves_exactly_the_expected_members(sandbox, hook):
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    batches = [emails(n + 1, range(n * 1000, (n + 1) * 1000)) for n in range(3)]
    audience_id = uploader.create_audience("Members by file", batches[0])
    for batch in batches:  # as the upload engine sends them: the first too
        uploader.send(batch, audience_id, "add")
    assert sorted(sandbox.members(audience_id)) == sorted(email_digests(range(3000)))
    uploader.send(batches[1], audience_id, "add")  # a retried batch changes nothing
    assert len(sandbox.members(audience_id)) == 3000

    uploader.send(emails(4, range(500, 1500)), audience_id, "remove")
    uploader.send(emails(4, range(500, 1500)), audience_id, "remove")  # and a retried removal too
    assert sorted(sandbox.members(audience_id)) == sorted(email_digests([*range(500), *range(1500, 3000)]))
    requests = sandbox.stats()["requests"]
    assert requests["dmp/custom_audience/create/"] == {"0": 1}
    assert requests["dmp/custom_audience/update/"] == {"0": 5}  # batch 1 was not appended again
    assert requests["dmp/custom_audience/file/upload/"] == {"0": 6}


def test_a_sync_smaller_than_tiktoks_minimum_creates_its_audience_from_its_only_file(sandbox, hook):
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    only = emails(1, range(300))
    audience_id = uploader.create_audience("Small by file", only)
    uploader.send(only, audience_id, "add")  # an APPEND here would be refused: 300 < 1,000
    assert sorted(sandbox.members(audience_id)) == sorted(email_digests(range(300)))
    assert "dmp/custom_audience/update/" not in sandbox.stats()["requests"]


def test_a_removal_below_the_minimum_is_refused_and_changes_nothing(sandbox, hook):
    uploader = FileUploader(hook, ADVERTISER, ("EMAIL_SHA256",))
    audience_id = uploader.create_audience("Kept above 1000", emails(1, range(1200)))
    with pytest.raises(TikTokBadRequestError, match="below the minimum 1000"):
        uploader.send(emails(2, range(300)), audience_id, "remove")
    assert len(sandbox.members(audience_id)) == 1200


def test_idfa_and_gaid_together_become_one_either_platform_file(sandbox, hook):
    ids = [str(uuid.UUID(int=n)) for n in range(1, 1001)]
    idfa = pa.array([sha(i) if n % 2 else None for n, i in enumerate(ids)])
    gaid = pa.array([None if n % 2 else sha(i) for n, i in enumerate(ids)])
    uploader = FileUploader(hook, ADVERTISER, ("IDFA_SHA256", "AAID_SHA256"))
    audience_id = uploader.create_audience(
        "Devices by file", UserBatch(1, ("IDFA_SHA256", "AAID_SHA256"), (idfa, gaid))
    )
    assert sorted(sandbox.members(audience_id)) == sorted(sha(i) for i in ids)
    assert sandbox.audience(audience_id)["calculate_type"] == "FIRST_SHA256"
