"""The job body: one member's config.yaml -> Trainer.fit -> results.json. ``python -m orchestra.job JOB_DIR``."""
