"""Keyword-only service functions: the only code that reads or writes the job tables."""
