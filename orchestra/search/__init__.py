"""Search sweeps: an Optuna study in the sweep directory, run by workers that ask it for trials."""
