"""The errors a user can cause, each with the exit code the ``fvae`` command ends with.

Every one derives from :class:`FvaeError`, which ``fvae.cli`` turns into one line on stderr and
its ``exit_code``: 2 for input that cannot be used (a config value, a dataset, a checkpoint, a
folder, labels), 1 for a run that started and failed. Each also derives from the built-in
exception a Python caller would expect (``ValueError``, ``FileExistsError``, ...). Anything else
reaching the command line is a bug, and says so.
"""
from __future__ import annotations


class FvaeError(Exception):
    """Base of the errors a user can cause; ``exit_code`` is the command's."""

    exit_code = 2


class InputError(FvaeError, ValueError):
    """A value, shape, name or set of labels that cannot be used as given."""


class ConfigError(InputError):
    """A config value of the wrong type or out of range: names the field, the value and what is allowed."""


class DataError(InputError):
    """A dataset that cannot be used as asked: missing, unreadable, unlabelled, or of the wrong size."""


class WeightsError(InputError):
    """A weights file that cannot be read, or whose tensors do not fit the module."""


class CheckpointError(WeightsError):
    """A checkpoint that is missing, damaged, or made for another config."""


class PretrainedError(InputError):
    """A pretrained folder or Hub id that cannot be loaded as asked."""


class PathExists(FvaeError, FileExistsError):
    """A folder to write that already holds what would be overwritten."""


class PathMissing(FvaeError, FileNotFoundError):
    """A run, checkpoint or folder that is not there."""


class Unavailable(FvaeError, RuntimeError):
    """Something asked for that cannot be had here: a judge, Inception weights, an optional package."""


class ScoreUnavailable(Unavailable):
    """The sample score cannot be computed as asked (no judge, no Inception weights)."""


class RunLocked(FvaeError, RuntimeError):
    """The run folder is being written by another process."""


class RunFailed(FvaeError, RuntimeError):
    """A run that started and could not go on; ``exit_code`` 1."""

    exit_code = 1


class TrainingDiverged(RunFailed):
    """Too many non-finite steps in a row."""


class CheckpointWriteError(RunFailed, OSError):
    """A checkpoint could not be written (a full disk, no permission): names the cause and what survives."""
