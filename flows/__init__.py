"""Prefect flows; each module runs with ``python -m flows.<name>``."""

import tasks  # noqa: F401  (sets the project's Prefect settings before prefect is imported)
