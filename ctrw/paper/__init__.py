"""The paper's experiments as suites, and its quoted values."""
