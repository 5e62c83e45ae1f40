# choirflow base image: Python 3.11, Java 17 for Spark, the locked dependencies and Delta's
# JARs baked in (fetched from Maven Central at build time, so containers start offline).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps git \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    CHOIRFLOW_HOME=/opt/choirflow \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    SPARK_LOCAL_IP=0.0.0.0
WORKDIR /opt/choirflow
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip sync --system requirements.lock
COPY src ./src
COPY schemas ./schemas
COPY configs ./configs
COPY jobs ./jobs
COPY dags ./dags
RUN uv pip install --system --no-deps -e . \
 && python -m choirflow.spark
