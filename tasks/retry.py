"""Which failures a task retries: a passing hiccup, never an error that would come back.

A ``LinkLMError`` names bad input (a missing dataset, a damaged checkpoint, a wrong
schema) and a pydantic ``ValidationError`` a bad setting: a retry meets the same error,
after repeating the work before it (on Gemma 3 270M from GGUF, a minute of dequantising).
A full disk is named as a ``StorageError`` (it does not pass by itself). Anything else (a
network share that blinked, a JS engine that failed to start) may pass, so it is retried.
"""

from __future__ import annotations

from pydantic import ValidationError

from linklm.errors import LinkLMError

PERMANENT = (LinkLMError, ValidationError)


def is_transient(error: BaseException) -> bool:
    return not isinstance(error, PERMANENT)


def only_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry unless the failure is a permanent one."""
    try:
        state.result()
    except Exception as error:  # the failed run's exception, raised again here
        return is_transient(error)
    return True
