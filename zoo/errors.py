"""Errors a user can cause. Each message says what was wrong and what to do."""


class ZooError(Exception):
    """Base class: the CLI prints these on one line and exits with status 2."""


class UnknownModelError(ZooError, KeyError):
    """A model name or tag that the catalog does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(ZooError, ValueError):
    """An option value, or a combination of options, that cannot work."""


class WeightsError(ZooError):
    """A weights file that is missing, unreadable or does not match its hash."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file that is not in the cache and cannot be downloaded."""


class WeightsHashError(WeightsError):
    """A weights file whose hash differs from the catalog's: it is never loaded."""


class DataError(ZooError, ValueError):
    """Data that cannot be loaded or does not fit the model."""
