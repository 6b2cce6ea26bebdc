"""Experiment tracking: the logger a job writes to, and wandb login, sync and Reports."""
