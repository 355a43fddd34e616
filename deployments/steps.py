"""The pull step of every deployment: how a worker finds the project's code before a run.

prefect.yaml calls ``deployments.steps.checkout`` with three environment variables of the
worker, read when the run starts (Prefect templates ``{{ $NAME }}`` then, and an unset
variable becomes an empty string):

- ``LINKLM_GIT_REPOSITORY`` (and ``LINKLM_GIT_BRANCH``): clone that repository with
  Prefect's ``git_clone`` step and run there: a worker that tracks a branch.
- ``LINKLM_PROJECT_DIR``: run in that checkout: the Docker image (``/opt/linklm``), a VM,
  Colab, or ``python -m deployments worker`` (which sets it to its own checkout).
- neither: the checkout this module was imported from, if it holds ``prefect.yaml``.

So one prefect.yaml serves a local checkout, a git clone and the image, and the worker's
machine, not the deployment, decides where the code comes from.
"""

from __future__ import annotations

import os
from pathlib import Path

from linklm.errors import LinkLMError

HERE = Path(__file__).resolve().parents[1]


class CheckoutError(LinkLMError):
    """No usable project checkout for a flow run."""


def project_dir(directory: str = "") -> Path:
    """The checkout to run in: ``directory`` if given, else this module's own checkout."""
    candidate = Path(directory).expanduser() if directory else HERE
    if not (candidate / "prefect.yaml").is_file() or not (candidate / "flows").is_dir():
        where = directory or f"{HERE} (where deployments.steps was imported from)"
        raise CheckoutError(
            f"{where}: not a linklm checkout (no prefect.yaml and flows/); set "
            "LINKLM_PROJECT_DIR on the worker to the checkout, or LINKLM_GIT_REPOSITORY to "
            "clone one"
        )
    return candidate.resolve()


def checkout(repository: str = "", branch: str = "", directory: str = "") -> dict[str, str]:
    """Clone ``repository`` or use the checkout in ``directory``; chdir there for the run."""
    if repository:
        from prefect.deployments.steps import git_clone

        cloned = git_clone(repository=repository, branch=branch or None)
        directory = str(Path.cwd() / cloned["directory"])
    target = project_dir(directory)
    os.chdir(target)
    return {"directory": str(target)}
