"""`ctrw-service`: serve, worker, migrate, keys, demo, and the HTTP client commands."""
