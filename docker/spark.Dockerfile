# Spark master and workers with the same Spark (pyspark 4.1.3) and Delta JARs as the driver.
ARG BASE=choirflow/base:latest
FROM ${BASE}
ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark
RUN cp /opt/choirflow/.cache/jars/*.jar "$SPARK_HOME/jars/"
ENTRYPOINT ["spark-class"]
