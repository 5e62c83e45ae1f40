"""choirflow_backfill: rebuild a date range on demand, in chunks of backfill.chunk_days
(the range engine: each step over a whole chunk, ranged steps in one pass), gates included.
Idempotent: every step replaces its own partitions, and the carried states are rebuilt from
the state before the first day. Trigger with params, e.g. `airflow dags trigger
choirflow_backfill -c '{"start": "2026-11-01", "end": "2026-11-07", "tables": ["ingest",
"features"], "train": false}'`.
Backfilling choirflow_daily itself also works: `airflow backfill create --dag-id
choirflow_daily --from-date ... --to-date ...` (one run per day, max_active_runs=1 keeps order).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from choirflow_dag_common import WAREHOUSE_POOL, default_args


@dag(
    dag_id="choirflow_backfill",
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(1, timedelta(minutes=5), timedelta(hours=12)),
    tags=["choirflow", "backfill"],
    doc_md=__doc__,
    params={
        "start": Param("2026-11-01", type="string", format="date", description="first day"),
        "end": Param("2026-11-01", type="string", format="date", description="last day"),
        "tables": Param(
            ["ingest", "features"],
            type="array",
            items={"type": "string", "enum": ["ingest", "features"]},
            description="steps to rebuild (each with its quality gate)",
        ),
        "train": Param(False, type="boolean", description="also train and evaluate each day"),
        "llm_budget": Param(
            0,
            type="integer",
            minimum=0,
            description="LLM calls per past day (0: stored or template profiles only)",
        ),
    },
)
def choirflow_backfill():
    @task(pool=WAREHOUSE_POOL)  # holds the warehouse for the whole range
    def rebuild(params=None) -> list:
        from choirflow import pipeline

        steps = tuple(params["tables"]) + (("train",) if params["train"] else ())
        return pipeline.backfill(
            params["start"], params["end"], steps, llm_budget=int(params.get("llm_budget", 0))
        )

    rebuild()


choirflow_backfill()
