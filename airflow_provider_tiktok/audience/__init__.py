"""Pure core of the sync (no Airflow imports): identifiers, de-duplication, batching, metrics."""

from airflow_provider_tiktok.audience.batching import MAX_BATCH_SIZE, UserBatch, iter_batches
from airflow_provider_tiktok.audience.identifiers import FieldRules, MatchField
from airflow_provider_tiktok.audience.metrics import SyncMetrics
from airflow_provider_tiktok.audience.prepare import PrepareOptions, UserPreparer

__all__ = [
    "MAX_BATCH_SIZE",
    "FieldRules",
    "MatchField",
    "PrepareOptions",
    "SyncMetrics",
    "UserBatch",
    "UserPreparer",
    "iter_batches",
]
