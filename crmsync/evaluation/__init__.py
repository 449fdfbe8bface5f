"""Offline evaluation of the scorer on labeled leads (`crmsync eval`) and the labels loop (`crmsync labels`)."""

from .metrics import Evaluation, Item, Targets, evaluate

__all__ = ["Evaluation", "Item", "Targets", "evaluate"]
