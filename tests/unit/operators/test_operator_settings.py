"""Settings the operator refuses before any call, its DataFrame source and its errors, and the Ads Manager link."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_provider_tiktok.audience import PrepareOptions
from airflow_provider_tiktok.audience.identifiers import scrub_identifiers
from airflow_provider_tiktok.exceptions import TikTokConfigurationError, TikTokSourceError
from airflow_provider_tiktok.links.tiktok import audience_url
from airflow_provider_tiktok.operators.tiktok import SyncAudienceOperator
from airflow_provider_tiktok.sync.staging import Source


def operator(**overrides) -> SyncAudienceOperator:
    settings = {
        "task_id": "sync",
        "audience_name": "VIP",
        "sql": "SELECT 1",
        "warehouse_conn_id": "warehouse",
        "match_fields": {"email": "email"},
    }
    return SyncAudienceOperator(**(settings | overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action": "append"}, "action must be 'add', 'remove' or 'mirror'"),
        ({"action": "mirror", "max_removal_fraction": 0}, "max_removal_fraction must be in"),
        ({"action": "mirror", "snapshot_table": "x; drop"}, "snapshot_table 'x; drop' is not a plain table name"),
        ({"audience_name": None}, "Name the audience"),
        ({"audience_name": "x" * 71}, "must be 1-70 characters"),
        ({"source": pd.DataFrame()}, "exactly one source"),
        ({"warehouse_conn_id": None}, "warehouse_conn_id is required"),
        ({"max_qps": 60}, "max_qps must be in"),
        ({"prepare_workers": 0}, "prepare_workers must be at least 1"),
        ({"batch_size": 20_000}, "between 1 and 10000"),
        ({"match_fields": {"fax": "fax"}}, "unknown field"),
        ({"advertiser_id": "7001", "advertiser_ids": ["7002"]}, "advertiser_id or advertiser_ids, not both"),
        ({"advertiser_ids": []}, "advertiser_ids is empty"),
        ({"advertiser_ids": "7001, 7001"}, "names an ad account twice"),
        ({"advertiser_ids": "[7001,"}, "advertiser_ids is not a list of ids.*tojson"),
        ({"advertiser_ids": "7001 acme"}, r"advertiser_ids holds \['acme'\]: ad account ids are digits only"),
        ({"advertiser_ids": ["7001", "7002"], "action": "mirror"}, "mirror each ad account with a task of its own"),
        ({"advertiser_ids": ["7001", "7002"], "audience_id": "55"}, "audience_id names one ad account's audience"),
    ],
)
def test_settings_are_refused_with_one_clear_message(overrides, message):
    with pytest.raises(TikTokConfigurationError, match=message):
        operator(**overrides)._validate_settings()


@pytest.mark.parametrize(
    ("rendered", "accounts"),
    [
        (["7001", 7002], ["7001", "7002"]),
        ("7001, 7002", ["7001", "7002"]),  # a template's output
        ('["7001", "7002"]', ["7001", "7002"]),
        ("['7001', '7002']", ["7001", "7002"]),  # "{{ params.accounts }}" of a list renders Python's form
        ("7001 7002;7003", ["7001", "7002", "7003"]),
        (None, None),  # advertiser_id (or the connection's) then
    ],
)
def test_advertiser_ids_are_templated_and_read_from_a_list_or_a_string(rendered, accounts):
    assert "advertiser_ids" in SyncAudienceOperator.template_fields
    sync = operator(advertiser_ids=rendered)
    sync._validate_settings()
    assert sync._listed_accounts() == accounts


def test_one_account_in_a_list_may_name_its_audience_by_id():
    operator(advertiser_ids=["7001"], audience_id="55", audience_name=None)._validate_settings()


def test_dataframe_source_is_read_in_order_and_checked_for_columns():
    frames = [
        pd.DataFrame({"user_id": [1], "email": ["a@b.com"]}),
        pd.DataFrame({"user_id": [2], "email": ["c@d.com"]}),
    ]
    options = PrepareOptions({"email": "email"}, "user_id")
    assert [f["user_id"].tolist() for f in Source(frames=iter(frames)).chunks(None, options)] == [[1], [2]]
    missing = Source(frames=pd.DataFrame({"user_id": [1], "mail": ["a@b.com"]}))
    with pytest.raises(TikTokConfigurationError, match=r"no column\(s\) \['email'\]"):
        list(missing.chunks(None, options))


def test_ads_manager_link_names_the_advertiser_and_audience():
    assert audience_url("7001", "7100000000001") == (
        "https://ads.tiktok.com/i18n/audience?aadvid=7001&keyword=7100000000001"
    )


def test_a_source_failing_mid_stream_fails_retryably_in_one_line_without_identifiers():
    def chunks():
        yield pd.DataFrame({"user_id": [1], "email": ["a@b.com"]})
        raise RuntimeError('invalid input syntax for type bigint: "jane.doe@example.com"\nLINE 1: SELECT ...')

    frames = Source(frames=chunks()).chunks(None, PrepareOptions({"email": "email"}, "user_id"))
    assert next(frames)["user_id"].tolist() == [1]
    with pytest.raises(TikTokSourceError) as caught:
        next(frames)
    assert str(caught.value) == (
        "Reading the source failed after its first chunk: "
        'RuntimeError: invalid input syntax for type bigint: "[redacted]"'
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("duplicate key value (email)=(Jane.Doe+x@Example.com)", "duplicate key value (email)=([redacted])"),
        ("bad phone '+1 (657) 777-0000' in row 3", "bad phone '[redacted]' in row 3"),
        ("idfa 6D92078A-8246-4BA4-AE5B-76104861E7DC unknown", "idfa [redacted] unknown"),
        ('column "emial" does not exist', 'column "emial" does not exist'),
    ],
)
def test_identifier_like_values_are_scrubbed_from_driver_messages(text, scrubbed):
    assert scrub_identifiers(text) == scrubbed
