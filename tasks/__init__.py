"""Prefect task wrappers: retries, caching, artifacts and logging around ``linklm``.

Importing this package sets the Prefect settings the project depends on (unless the
environment already sets them), so no one has to configure Prefect by hand: offline
ephemeral mode when no API URL is set, no telemetry, a start-up timeout that suits two busy
cores, library logs outside a flow kept to the terminal, and hub libraries kept offline.
"""

import logging
import os

PROJECT_ENV_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "linklm",
    # linklm called outside a flow (a notebook, `flows.predict --input -`) logs to the
    # terminal only, without a warning per line that there is no flow run to send it to
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

for _name, _value in PROJECT_ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

# Prefect attaches its handlers to the extra loggers but leaves their level alone: without a
# level, linklm's INFO lines (training progress, evaluation steps) would stop at the root's
# WARNING and never reach the run's logs.
_linklm_logger = logging.getLogger("linklm")
if _linklm_logger.level == logging.NOTSET:
    _linklm_logger.setLevel(logging.INFO)
