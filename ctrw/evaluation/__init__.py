"""Evaluation: attack protocols, scoring with intervals, sigma statistics, diagnostics."""
