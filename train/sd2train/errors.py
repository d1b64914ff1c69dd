"""The trainer's one error type for bad input, and the wrapper that prints it as one ``error:`` line.

A data file that is missing, unreadable or malformed, settings that cannot work, an output another
run is writing: every ``python -m sd2train.<cli>`` ends with ``error: <what and where>`` and exit
code 2 instead of a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

from sd2.file_lock import FileLockedError


class InputError(ValueError):
    """Bad trainer input: a data file, a setting, an output folder."""


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file or folder the run needs is not there."""


def run_cli(main, argv=None):
    """Run a trainer CLI's ``main``; bad input ends it with one ``error:`` line and exit code 2."""
    try:
        return main(argv)
    except (InputError, FileLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


@contextmanager
def bad_setting(flag: str):
    """Inside the block, a shared validator's ValueError (``sd2``'s exits, EAGLE-3's feature layers)
    is bad input: re-raised as an InputError naming the flag."""
    try:
        yield
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}") from None
