"""Attacks: one builder per attack (`build.py`) and our own PGD and DeepFool implementations."""
