"""Specific exceptions: each names the file, chunk or row at fault and the fix.

The CLIs print ``str(error)`` on one line and exit non-zero.
"""

from __future__ import annotations


class LinkLMError(Exception):
    """Base of every error the platform raises on purpose."""


def first_line(exc: BaseException) -> str:
    """An exception's first line (or its type's name): a library's message can run to
    screens, and an error here is one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class DatasetError(LinkLMError):
    """A dataset folder is missing, corrupt, busy or made with another config."""


class ValidationFailed(LinkLMError):
    """Too many rows broke the contract of DATA_SPEC.md."""


class SchemaError(LinkLMError):
    """A file's columns do not match DATA_SPEC.md (missing, extra, unreadable)."""


class PromptError(LinkLMError):
    """A prompt template asks for a field it may not use."""


class StorageError(LinkLMError):
    """A folder or store that cannot take what a run would write (read-only, a file, too
    little space, an unreachable URL), or a copy in the store that is absent or damaged."""
