# The GPU trainer: a Celery worker that takes the `training` queue. PyPI's torch wheel
# carries its CUDA libraries; the host needs the NVIDIA driver and container toolkit.
ARG BASE=choirflow/base:latest
FROM ${BASE}
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/choirflow/dags
RUN mkdir -p /opt/airflow
ENTRYPOINT ["airflow", "celery", "worker", "--queues", "training", "--concurrency", "1"]
