"""The pull step of every deployment: how a worker finds the project's code before a run.

prefect.yaml calls ``deployments.steps.checkout`` with three environment variables of the
worker, read when the run starts (Prefect templates ``{{ $NAME }}`` then, and an unset
variable becomes an empty string):

- ``LINKLM_GIT_REPOSITORY`` (and ``LINKLM_GIT_BRANCH``): clone that repository with
  Prefect's ``git_clone`` step and run there: a worker that tracks a branch. The clone is
  kept under ``$LINKLM_HOME/checkouts`` and brought up to the branch's tip at each run (a
  process worker starts each run in a temporary folder it deletes afterwards, so a clone
  there lost every dataset and run). Its ``runs/`` is a link to
  ``$LINKLM_HOME/checkouts/<clone>.runs``: Prefect re-clones from scratch when an update
  fails, and what the runs wrote must outlive that.
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


def checkouts_dir() -> Path:
    """Where a git-tracking worker keeps its clones (``$LINKLM_HOME/checkouts``)."""
    from linklm.store import home

    return home().expanduser() / "checkouts"


def clone(repository: str, branch: str = "") -> Path:
    """The kept clone of ``repository`` at ``branch``'s tip, its ``runs/`` a link to a
    folder beside it that no re-clone deletes."""
    from prefect.deployments.steps import git_clone

    base = checkouts_dir()
    base.mkdir(parents=True, exist_ok=True)
    started_in = Path.cwd()
    os.chdir(base)  # git_clone clones (or updates) under the working directory
    try:
        cloned = base / git_clone(repository=repository, branch=branch or None)["directory"]
    finally:
        os.chdir(started_in)
    kept_runs = base / f"{cloned.name}.runs"
    kept_runs.mkdir(exist_ok=True)
    runs = cloned / "runs"
    if not runs.is_symlink():
        if runs.exists():
            raise CheckoutError(
                f"{runs}: a folder in the clone, where the link to {kept_runs} belongs; move "
                "what it holds there and remove it"
            )
        runs.symlink_to(kept_runs, target_is_directory=True)
    return cloned


def checkout(repository: str = "", branch: str = "", directory: str = "") -> dict[str, str]:
    """Clone ``repository`` or use the checkout in ``directory``; chdir there for the run."""
    target = project_dir(str(clone(repository, branch)) if repository else directory)
    os.chdir(target)
    return {"directory": str(target)}
