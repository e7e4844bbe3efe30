"""Shared test helpers: tiny models and configs."""
