"""The Airflow pool that keeps choirflow's warehouse writers apart.

choirflow_daily, choirflow_backfill (and `airflow backfill create` runs of choirflow_daily) and
choirflow_groups_refresh write the same tables, and some steps read a table in two snapshots
(which state day is newest, then that day's rows): a rebuild of an earlier day committing in
between would leave the later step with silently wrong sums. Every warehouse-writing task takes
the pool's one slot, so such tasks never overlap; each still sees the others' committed output.

`python -m choirflow.pools` creates the pool in the configured Airflow metadata DB (the Makefile
and the tests do this after `airflow db migrate`); a scheduler does not run a task whose pool
is missing. `dag.test()` and `airflow dags test` ignore pools.
"""

from __future__ import annotations

WAREHOUSE_POOL = "choirflow_warehouse"
WAREHOUSE_POOL_SLOTS = 1


def ensure_pools() -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        WAREHOUSE_POOL,
        WAREHOUSE_POOL_SLOTS,
        "choirflow tasks that write the warehouse run one at a time",
        include_deferred=False,
    )


if __name__ == "__main__":
    ensure_pools()
    print(f"pool {WAREHOUSE_POOL}: {WAREHOUSE_POOL_SLOTS} slot")
