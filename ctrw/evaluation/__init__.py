"""Evaluation: attack protocols (``evaluate``), stochastic scoring (``scoring``) with its intervals
(``intervals``), sigma statistics (``sigma_stats``) and the gradient-masking diagnostics
(``diagnostics`` runs them: pure row ``checks``, ``model_checks``, ``entries``, ``verdicts``)."""
