"""Local emulator of the TikTok Marketing API audience endpoints.

Start it with ``python -m airflow_provider_tiktok.sandbox``; drive it from Python with ``SandboxProcess``.
"""
