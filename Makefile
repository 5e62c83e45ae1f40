# Two commands matter: `make demo` and `make test`. Each sets up what is missing (idempotent:
# stamps record what is done) and then does its job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9

export CHOIRFLOW_HOME := $(CURDIR)
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS := True
export SPARK_LOCAL_IP := 127.0.0.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export AIRFLOW_CONN_SPARK_DEFAULT := {"conn_type": "spark", "host": "local[*]"}
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# llama-cpp-python compiles from source (about 6.5 min on 2 cores; uv caches the wheel):
# a portable x86-64 build with AVX2 rather than this machine's native flags.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

VENV_STAMP := $(VENV)/.choirflow-synced
JARS_STAMP := .cache/jars/.fetched
CLASSES_STAMP := .cache/jars/.classes-archived
AIRFLOW_STAMP := .airflow/.migrated
POOLS_STAMP := .airflow/.pools
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)

.PHONY: setup chromium demo test test-fast lint lock airflow clean

setup: $(VENV_STAMP) $(JARS_STAMP) $(CLASSES_STAMP) $(AIRFLOW_STAMP) $(POOLS_STAMP) chromium

# Headless Chromium checks the HTML report renders (Debian's package; needs root or sudo).
chromium:
ifeq ($(CHROMIUM),)
	@echo "==> Debian chromium (report rendering test)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	 $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null
endif

$(VENV_STAMP): requirements.lock pyproject.toml
	@echo "==> Python environment ($(VENV)) from requirements.lock"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

$(JARS_STAMP): | $(VENV_STAMP)
	@echo "==> Delta JARs (resolved once from Maven Central, then used offline)"
	$(PY) -m choirflow.spark
	@touch $@

# The class-data-sharing archive of Spark and Delta that a small day's JVMs start from
# (choirflow.spark; about a minute once, then each cold Spark step starts in half the time).
$(CLASSES_STAMP): $(VENV_STAMP) | $(JARS_STAMP)
	@echo "==> JVM class archive of Spark and Delta (quick start for small days)"
	$(PY) -m choirflow.spark archive
	@touch $@

$(AIRFLOW_STAMP): | $(VENV_STAMP)
	@echo "==> Airflow home $(AIRFLOW_HOME) (SQLite metadata DB)"
	@mkdir -p $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/migrate.log; exit 1)
	@touch $@

# The warehouse pool (one slot) that keeps daily, backfill and group-refresh writers apart.
$(POOLS_STAMP): src/choirflow/pools.py | $(AIRFLOW_STAMP)
	$(PY) -m choirflow.pools
	@touch $@

demo: setup
	$(VENV)/bin/choirflow demo

# One process: three pytest-xdist workers (`pytest -n 3 --dist loadgroup`, grouped by
# tests/conftest.py) were not faster on a slow 2-core machine (README, Timings).
test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "unit"

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Re-pin every dependency after editing requirements.in.
lock: $(VENV_STAMP)
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 requirements.in -o requirements.lock

airflow: setup
	@echo "Airflow UI: http://localhost:8080 (no login needed locally)"
	$(VENV)/bin/airflow standalone

clean:
	rm -rf data .airflow
