"""The CTRW job service: a FastAPI API over a PostgreSQL/SQLite job table.

The API process never imports torch: it validates bodies with `ctrw.config` (pydantic only)
and dispatches work to `worker/` by task name.
"""
