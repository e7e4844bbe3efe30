"""Shared test material: tiny job configs (configs), toy data and models (models), result rows
(rows), the wait scale (timing) — none of these import the service — and, for service tests only,
the real processes and where PostgreSQL and Redis are (processes), the API in-process (api)."""
