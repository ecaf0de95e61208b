"""Apache Airflow provider that syncs warehouse-defined audiences into TikTok Custom Audiences."""

__version__ = "0.1.0"
