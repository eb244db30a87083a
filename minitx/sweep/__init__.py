"""Hyperparameter search: a space of config values (space.py), an Optuna study of minitx runs
(study.py), and its results read back (results.py)."""
