"""Errors about models that callers catch by kind (the CLI prints them as one line, exit 2)."""

from __future__ import annotations


class ModelRefError(ValueError):
    """A model reference is malformed, or names something that is not a loadable open_clip model."""


class PickledWeightsRefused(ModelRefError):
    """Only pickled weights exist and the caller did not opt in."""


class UnsafeModelError(ModelRefError):
    """A model's files ask for something an untrusted model may not do (run code, fetch elsewhere)."""
