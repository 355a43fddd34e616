"""Deployment helpers: the work pools, the prefect.yaml deployments, workers, the pull step.

    python -m deployments up --api-url http://127.0.0.1:4200/api     # pools + every deployment
    python -m deployments worker --pool linklm-gpu                   # run a worker here

Importing this package sets the project's Prefect defaults (``tasks``) like every flow does.
"""

import tasks  # noqa: F401  (the project's Prefect and hub defaults)
