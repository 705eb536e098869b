"""Errors a user can act on.

Every expected failure is one of these: the CLI prints its message as a single line on stderr
and exits with `exit_code` (2 for usage, 1 for runtime), never with a traceback.
"""

import difflib


class KdbenchError(Exception):
    """A failure with a message that names the problem and the fix."""

    exit_code = 1


class TrackingError(KdbenchError):
    """The tracker refused a finished run: the folder is complete; send it later."""

    exit_code = 1


class ConfigError(KdbenchError):
    """An impossible or inconsistent setting (usage error)."""

    exit_code = 2


class UntrustedCode(ConfigError):
    """A run folder names code (an architecture's import string) the user has not consented
    to import: `--trust-code` / `trust_code=True`."""


class DataError(KdbenchError):
    """Dataset files that are missing, corrupt or do not match their checksums."""

    exit_code = 1


class UserDataError(DataError):
    """Your own data (`--data`) unusable as given: a usage error, fixed in the file you give."""

    exit_code = 2


class RunFolderError(KdbenchError):
    """A run folder that cannot be used: unwritable, or holding another configuration."""

    exit_code = 2


def did_you_mean(name: str, choices) -> str:
    """' (did you mean a, b?)' for the closest valid names, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""
