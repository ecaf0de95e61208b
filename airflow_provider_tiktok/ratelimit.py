"""Kept so DAG files written for 0.1 keep importing; the public place is ``airflow_provider_tiktok.sync``."""

from airflow_provider_tiktok.sync.ratelimit import TIKTOK_MAX_QPS, SlidingWindowLimiter, share_of_budget

__all__ = ["TIKTOK_MAX_QPS", "SlidingWindowLimiter", "share_of_budget"]
