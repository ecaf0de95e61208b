# Airflow 3.3.2 with this provider installed (pinned by constraints.txt), for docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root . /opt/airflow-provider-tiktok
RUN pip install --no-cache-dir -c /opt/airflow-provider-tiktok/constraints.txt \
        "/opt/airflow-provider-tiktok[postgres]"
