"""Callbacks that evaluate or feed a Module: linear probe, kNN and feature queue."""

from orchestra.callbacks.knn import OnlineKNN
from orchestra.callbacks.probe import OnlineProbe
from orchestra.callbacks.queue import OnlineQueue

__all__ = ["OnlineKNN", "OnlineProbe", "OnlineQueue"]
