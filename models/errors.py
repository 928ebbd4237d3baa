"""Errors the train stage reports as a message, not a traceback. No heavy imports: shells catch them."""

from __future__ import annotations


class ModelBuildError(ValueError):
    """A plan section that can't become a Keras model. The message names the plan field."""


class AcceleratorError(RuntimeError):
    """The plan asks for an accelerator this machine doesn't have."""
