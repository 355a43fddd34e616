"""Command-line plumbing shared by the flow modules: one-line errors, non-zero exits."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from pydantic import ValidationError

from linklm.errors import LinkLMError


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main``; a platform error or a bad option prints one line and exits 2."""
    try:
        code = main()
    except LinkLMError as exc:
        fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}")
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: file not found")
    raise SystemExit(code)
