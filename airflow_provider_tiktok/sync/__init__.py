"""The resumable sync engine behind ``SyncAudienceOperator`` (ledger, upload, rate budget, retry window, results).

The public names a DAG file uses are re-exported here: ``from airflow_provider_tiktok.sync import retry_arguments``.
"""

from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS, share_of_budget
from airflow_provider_tiktok.sync.retry_window import DEFAULT_RETRY_WINDOW, retry_arguments

__all__ = ["DEFAULT_RETRY_WINDOW", "TIKTOK_MAX_QPS", "retry_arguments", "share_of_budget"]
