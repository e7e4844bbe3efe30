"""Keyword-only service functions: the only code that reads or writes the job tables.

- `lifecycle`: the state machine (allowed transitions, terminal statuses, `transition`).
- `jobs`: create (cost and quota checks), read, cancel; `views`: the job list.
- `scheduling`: `dispatch_ready`, the one way a job that became ready gets its message.
- `execution`: a worker's steps (claim, heartbeat, progress, release, finish).
- `reconcile`: stale and lost jobs brought back in line with the database.
- `suites`, `records`, `tables`: suites, a job's stored results, their tables.
"""
