"""Command-line plumbing shared by the flow modules: one-line errors, non-zero exits."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from pydantic import ValidationError

from linklm import atomic
from linklm.errors import LinkLMError


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse in the platform's error style: one ``error:`` line and exit 2 for an unknown
    option, a missing argument or a value of the wrong type (the usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def option_error(exc: ValidationError) -> str:
    """A config's first validation error as one line: the option, then what is wrong.

    A check across options (e.g. bf16 with fp16) has no single option to name; a setting of a
    nested config that the CLI offers as an option of its own is named by that option."""
    err = exc.errors()[0]
    message = err["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in err["loc"] if part not in NESTED)
    return f"invalid option {where}: {message}" if where else f"invalid options: {message}"


class _NoTracebackForBadInput(logging.Formatter):
    """The terminal's Prefect formatter, without the traceback of an error the platform
    raised on purpose (bad input, a bad setting): its message says what and where, and two
    screens of engine frames above it hid that. The record is left whole for the run's logs
    in the UI (the API handler formats its own copy)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, (LinkLMError, ValidationError)) and not atomic.disk_error(error):
            return self.inner.format(record)
        kept = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = kept


def quiet_bad_input_tracebacks() -> None:
    """Set Prefect's logging up now (it would at the first flow run) and give its terminal
    handler the formatter above; later set-ups are incremental and keep it."""
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    if not PROCESS_LOGGING_CONFIG:
        setup_logging()
    for handler in logging.getLogger().handlers:
        inner = handler.formatter
        wrapped = isinstance(inner, _NoTracebackForBadInput)
        if isinstance(handler, PrefectConsoleHandler) and inner is not None and not wrapped:
            handler.setFormatter(_NoTracebackForBadInput(inner))


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main``; a platform error or a bad option prints one line and exits 2; SIGTERM
    or Ctrl-C stops it cleanly within seconds (``flows.stopping``)."""
    from flows import stopping

    quiet_bad_input_tracebacks()
    try:
        with stopping.handled():
            code = main()
    except KeyboardInterrupt:
        stopping.exit_now(signal.SIGINT)
    except stopping.Stopped as stop:
        stopping.exit_now(stop.signum)
    except LinkLMError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(option_error(exc))
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: file not found")
    except OSError as exc:  # a full disk, a read-only folder: one line, not a traceback
        line = atomic.disk_error(exc)
        if line is None:
            raise
        fail(line)
    raise SystemExit(code)


NESTED = ("train",)  # a config's settings of every run it makes: options of their own


def _options(model_cls) -> list[tuple[str, object, str | None, object]]:
    """(option name, field, the nested config it sets or None, its default) for every
    setting of a config: its own fields, and those of a nested ``NESTED`` config (a demo's
    ``train``: ``--max-steps`` sets ``train.max_steps``)."""
    found = []
    for name, field in model_cls.model_fields.items():
        if name in NESTED:
            nested = field.get_default(call_default_factory=True)
            for sub, sub_field in type(nested).model_fields.items():
                found.append((sub, sub_field, name, getattr(nested, sub)))
        else:
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            found.append((name, field, None, default))
    return found


def add_model_options(parser, model_cls, skip: tuple[str, ...] = ()) -> None:
    """One --option per setting of a config (pydantic checks the values)."""
    import typing

    for name, field, _, default in _options(model_cls):
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "").replace("%", "%%")  # argparse formats help
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(field.annotation) is tuple:
            parser.add_argument(flag, default=None, help=f"comma-separated. {help_text}")
        elif field.is_required():
            parser.add_argument(flag, default=None, help=f"{help_text} (required)")
        else:
            shown = str(default).replace("%", "%%")
            parser.add_argument(flag, default=None, help=f"{help_text} (default {shown})")


def model_from_options(model_cls, args):
    """The config from parsed options; unset options keep their defaults (and stay out of
    ``model_fields_set``, so a resume can tell them from options typed)."""
    return model_cls(**options_given(model_cls, args))


def options_given(model_cls, args) -> dict:
    """Only the options the user typed, converted for pydantic; ``none`` for an option that
    may be empty is None (``--max-rows none``: no cap). A nested config gets its defaults
    with the typed options on top; ``--epochs`` alone trains by epochs (a default step count
    would otherwise decide)."""
    import typing

    values: dict = {}
    nested: dict[str, dict] = {}
    for name, field, parent, _ in _options(model_cls):
        value = getattr(args, name, None)
        if value is None:
            continue
        optional = type(None) in typing.get_args(field.annotation)
        if optional and isinstance(value, str) and value.lower() == "none":
            value = None
        elif typing.get_origin(field.annotation) is tuple:
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        (nested.setdefault(parent, {}) if parent else values)[name] = value
    for parent, given in nested.items():
        defaults = model_cls.model_fields[parent].get_default(call_default_factory=True)
        settings = defaults.model_dump(exclude_unset=True)
        if "epochs" in given and "max_steps" not in given:
            settings.pop("max_steps", None)
        values[parent] = settings | given
    return values
