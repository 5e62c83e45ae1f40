# Airflow components (api-server, scheduler, dag-processor, triggerer, Celery workers).
ARG BASE=choirflow/base:latest
FROM ${BASE}
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/choirflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
RUN mkdir -p /opt/airflow
ENTRYPOINT ["airflow"]
