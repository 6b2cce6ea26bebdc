"""Hydra configs: composing one run, expanding and validating sweep members, rendering them to YAML."""
