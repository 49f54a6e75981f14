"""The project's own exception types.

Every error a user can cause names the thing that is wrong (a file, a field, a setting), what is
wrong with it, and how to fix it. The CLI prints the message without a traceback and exits 2.
"""
from __future__ import annotations


class MobiledetError(Exception):
    """Base class: `problem` names what is wrong, `where` the file or setting, `fix` the remedy."""

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.fix = fix
        text = f"{where}: {problem}" if where else problem
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class ConfigError(MobiledetError):
    """A setting (CLI flag, config field, pipeline.config entry) has a value that cannot work."""


class DataError(MobiledetError):
    """A dataset, annotation file or image is missing, malformed or unreadable."""


class CheckpointError(MobiledetError):
    """A checkpoint or export folder is missing, incomplete or inconsistent."""


class ConversionError(MobiledetError):
    """A TFLite conversion recipe cannot be applied to the given graph or settings."""


class ModelContractError(MobiledetError):
    """A .tflite model does not have the inputs/outputs the pipeline expects."""


class ValidationFailed(MobiledetError):
    """An output-contract expectation failed."""


class EdgeTPUError(MobiledetError):
    """The Edge TPU compiler failed or could not be run."""


class StoreError(MobiledetError):
    """The artifact store refused an operation (for example overwriting a published version)."""


class ServiceError(MobiledetError):
    """A service (an Airflow component, a database, a broker) could not be started, did not
    become healthy, or answered with an error."""


class PipelineError(MobiledetError):
    """A pipeline run could not decide or publish anything (its report says why)."""


class DeviceError(MobiledetError):
    """A device (a phone over adb) is missing, offline, unauthorized, or a run on it failed."""
