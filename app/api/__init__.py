"""HTTP edge: dependencies, middleware and routes."""
