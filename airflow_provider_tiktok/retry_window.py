"""Kept so DAG files written for 0.1 keep importing; the public place is ``airflow_provider_tiktok.sync``."""

from airflow_provider_tiktok.sync.retry_window import DEFAULT_RETRY_WINDOW, expected_retry_delays, retry_arguments

__all__ = ["DEFAULT_RETRY_WINDOW", "expected_retry_delays", "retry_arguments"]
