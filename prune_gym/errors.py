"""One exception hierarchy: every error prune-gym raises on purpose is a PruneGymError.

Messages name the argument, say what was wrong and what would be right, so a user can
fix the call without reading our source.
"""

from __future__ import annotations


class PruneGymError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidArgumentError(PruneGymError, ValueError):
    """An argument has a wrong value, type or shape."""


class ModelAnalysisError(PruneGymError):
    """The model cannot be analysed: no prunable layer, not traceable, or its forward raises."""


class AnalysisTimeoutError(ModelAnalysisError, TimeoutError):
    """The analysis of a model ran past its ``analysis_timeout``."""


class KeepStateError(InvalidArgumentError):
    """A keep state (channels kept per group) is malformed or out of range."""


class DataError(InvalidArgumentError):
    """Data does not fit the model: wrong shape, labels out of range, or empty."""


class CheckpointError(PruneGymError):
    """A checkpoint is missing, unreadable, or its keys do not match the model."""


class TaskError(PruneGymError):
    """A named task is unknown, or what it needs (weights, data) is missing."""


class EnvStateError(PruneGymError, RuntimeError):
    """An environment was used out of order (step before reset, step after the episode ended)."""


class MissingDependencyError(PruneGymError, ImportError):
    """An optional dependency (torchvision, for one) is needed for what was asked."""
