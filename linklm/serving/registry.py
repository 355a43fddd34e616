"""The champion registry: which trained model serves, why, and every decision that led there.

One JSON file holds the frozen test set that
every score was measured on, the current champion and the history of decisions. Scheduled
retraining reads it, evaluates a challenger and the champion on the same frozen rows, and
records the decision here; ``champion_run_dir()`` is what serving code asks for.

The promotion rule (``decide``) is a pure function so it can be tested on its own: a
challenger must be strictly better on the chosen metric, a missing score never wins, and
the first challenger that scored becomes champion. Writes happen under a file lock and
are atomic, and a decision is refused when the champion changed while it was being made,
so two retraining runs cannot both promote against a stale champion.

Where the file lives (``location``): the path a config names, else the store's
``registry/registry.json`` when a store URL is set (every worker on every machine reads
and writes that one, under a lock object in the store that only one can create), else
``runs/registry/registry.json`` on this machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from linklm import store
from linklm.config import LOWER_IS_BETTER
from linklm.errors import LinkLMError, StorageError
from linklm.evaluation import summaries
from linklm.evaluation.metrics import coverage
from linklm.model.runs import RUN_FILE

log = logging.getLogger(__name__)
DEFAULT_PATH = Path("runs/registry/registry.json")
Location = str | Path  # a path on this machine, or a store URL
FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 60.0


class RegistryError(LinkLMError):
    """The registry is missing what was asked for, is unreadable, or disagrees with a run."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    # kept only because the champion cannot be scored: no challenger could ever be promoted,
    # so the retrain run fails and says how to get out
    blocked: bool = False


def _usable(score: float | None) -> bool:
    return score is not None and not (isinstance(score, float) and math.isnan(score))


def is_better(metric: str, challenger: float, champion: float) -> bool:
    """Strictly better: higher for accuracies, lower for errors; a tie is not better."""
    return challenger < champion if metric in LOWER_IS_BETTER else challenger > champion


def decide(
    metric: str,
    challenger: float | None,
    champion: float | None,
    has_champion: bool,
    challenger_coverage: float | None = None,
    champion_coverage: float | None = None,
    champion_scored: bool = False,
    champion_error: str | None = None,
    replace_unscorable: bool = False,
) -> Decision:
    """Promote the challenger or keep the champion; the reason is written to the registry.

    ``*_coverage`` are the shares of rows each answered usably (``coverage``);
    ``champion_scored`` says the champion's evaluation ran (its score may still be None:
    it gave no usable answer); ``champion_error`` why it could not be scored at all, and
    ``replace_unscorable`` lets a scored challenger replace such a champion (the way out
    when its run is gone for good)."""
    if not _usable(challenger):
        return Decision(
            False, f"the challenger has no {metric} score (it failed or never answered)"
        )
    if challenger_coverage == 0:
        return Decision(
            False,
            f"the challenger gave no usable answer on the frozen test rows ({metric} "
            f"{challenger:.4g}); a champion must answer",
        )
    if not has_champion:
        return Decision(True, f"first champion: {metric} {challenger:.4g}")
    if not _usable(champion):
        if champion_scored:
            return Decision(
                True,
                f"the champion gave no usable answer for {metric} on the frozen test rows; "
                f"the challenger scores {challenger:.4g}",
            )
        why = f" ({champion_error})" if champion_error else ""
        if replace_unscorable:
            return Decision(
                True,
                f"the champion could not be scored on the frozen test rows{why}; the scored "
                f"challenger ({metric} {challenger:.4g}) replaces it, as "
                "--replace-unscorable-champion asks",
            )
        return Decision(
            False,
            f"the champion could not be scored on the frozen test rows{why}, so no challenger "
            f"can be compared with it (this one: {metric} {challenger:.4g}) and none will be "
            "promoted; restore the champion's run folder, or re-run with "
            "--replace-unscorable-champion to let a scored challenger replace it",
            blocked=True,
        )
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    fewer = (
        metric in LOWER_IS_BETTER
        and challenger_coverage is not None
        and champion_coverage is not None
        and challenger_coverage < champion_coverage
    )
    if fewer:
        return Decision(
            False,
            f"{metric} {challenger:.4g} is over {challenger_coverage:.0%} of the rows, the "
            f"champion's {champion:.4g} over {champion_coverage:.0%}: an error over fewer "
            "answered rows is not better",
        )
    if is_better(metric, challenger, champion):
        return Decision(
            True,
            f"{metric} {challenger:.4g} beats the champion's {champion:.4g} ({direction} is better)",
        )
    verdict = "ties" if challenger == champion else "does not beat"
    return Decision(
        False,
        f"{metric} {challenger:.4g} {verdict} the champion's {champion:.4g} ({direction} is better)",
    )


def empty() -> dict:
    return {"format": FORMAT_VERSION, "frozen_test": None, "champion": None, "history": []}


def location(configured: Location | None = None, store_url: str | None = None) -> Location:
    """The registry a run uses: the one configured, else the store's (``store_url``, else
    $LINKLM_ARTIFACTS_URL), else ``DEFAULT_PATH`` on this machine."""
    if configured is not None and str(configured).strip():
        return configured if store.is_url(configured) else Path(configured)
    shared = store.artifacts_url(store_url)
    return store.registry_url(shared) if shared else DEFAULT_PATH


_ABSENT = object()  # no registry file yet (a file holding `null` is no registry)


def _content(path: Location) -> object:
    if store.is_url(path):
        try:
            fs, where = store.filesystem(str(path))
            return json.loads(fs.cat_file(where))
        except FileNotFoundError:
            return _ABSENT
        except ValueError as exc:
            raise RegistryError(f"{path}: not valid JSON ({exc}); restore it from a copy") from None
        except (StorageError, OSError) as exc:
            raise RegistryError(f"{path}: cannot read the registry ({exc})") from None
    path = Path(path)
    if not path.exists():
        return _ABSENT
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc}); restore it from a copy") from None
    except OSError as exc:  # a folder, no permission
        raise RegistryError(f"{path}: cannot read the registry ({exc.strerror})") from None


def read(path: Location = DEFAULT_PATH) -> dict:
    """The registry's content; an empty registry when the file does not exist yet."""
    data = _content(path)
    if data is _ABSENT:
        return empty()
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: not a registry (a JSON object); restore it from a copy")
    if data.get("format") != FORMAT_VERSION:
        raise RegistryError(
            f"{path}: registry format {data.get('format')!r}, expected {FORMAT_VERSION}"
        )
    missing = [k for k in empty() if k not in data]
    if missing or not isinstance(data["history"], list):
        what = f"lacks {', '.join(missing)}" if missing else "has a history that is not a list"
        raise RegistryError(f"{path}: {what}; restore it from a copy")
    champion = data["champion"]
    if champion is not None and not (
        isinstance(champion, dict)
        and all(isinstance(champion.get(key), str) for key in ("id", "run_dir"))
    ):
        raise RegistryError(
            f"{path}: the champion record is not an object with an id and a run_dir; restore "
            "it from a copy"
        )
    return data


def champion(path: Location = DEFAULT_PATH) -> dict | None:
    """The current champion's record (run folder, scores, lineage), or None before the first."""
    return read(path)["champion"]


def champion_run_dir(path: Location = DEFAULT_PATH, current: dict | None = None) -> Path:
    """The champion's training run folder (run.json, model/ or adapter/): its copy in the
    store, fetched once into this machine's cache (the store is the source of truth, so
    every machine serves the same files), else the folder it was trained in when that is
    on this machine; ``current``: the registry as the caller read it already."""
    record = (current or read(path))["champion"]
    if record is None:
        raise RegistryError(
            f"{path}: no champion yet; run the retrain flow (python -m flows.retrain) to "
            "train, evaluate and promote one"
        )
    run_dir = Path(record["run_dir"])
    if record.get("artifacts"):
        try:
            return store.fetch_folder(record["artifacts"], record["id"])
        except (StorageError, OSError) as exc:
            if (run_dir / RUN_FILE).is_file():
                log.warning("%s: %s; serving the run folder %s instead", path, exc, run_dir)
                return run_dir
            raise RegistryError(
                f"{path}: the champion {record['id']} is not on this machine and its copy "
                f"{record['artifacts']} cannot be read ({exc})"
            ) from None
    if not run_dir.exists():
        raise RegistryError(
            f"{path}: the champion {record['id']} lives in {run_dir}, which is not on this "
            "machine, and no copy was published (set a store: LINKLM_ARTIFACTS_URL)"
        )

    if not (run_dir / RUN_FILE).is_file():
        raise RegistryError(
            f"{path}: the champion {record['id']}'s folder {run_dir} is not a finished run (no "
            f"{RUN_FILE}); restore it from a copy or promote another run"
        )
    return run_dir


def lock(path: Path) -> FileLock:
    """The registry's writer lock (a sibling ``.lock`` file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")), timeout=LOCK_TIMEOUT_S)


def check_frozen(registry: dict, frozen: dict, path: Path = DEFAULT_PATH) -> None:
    """Refuse a frozen test set other than the one every recorded score was measured on."""
    recorded = registry.get("frozen_test")
    if recorded and recorded["dataset_sha256"] != frozen["dataset_sha256"]:
        raise RegistryError(
            f"{path}: scores were measured on frozen test set {recorded['dataset_sha256'][:12]} "
            f"({recorded['data_dir']}), this run has {frozen['dataset_sha256'][:12]} "
            f"({frozen['data_dir']}); scores on other rows are not comparable. Restore that "
            "folder or start a new registry file"
        )


def record_decision(
    path: Location,
    outcome: dict,
    champion_seen: str | None,
    frozen: dict,
    replace_unscorable: bool = False,
) -> dict:
    """Decide and write one retraining outcome; returns the history entry written.

    ``outcome`` holds the challenger (id, run_dir, metric, scores, lineage, status) and the
    champion score measured in this run; ``champion_seen`` is the champion id it was measured
    against. Under the lock, a registry whose champion has changed since is not overwritten
    by a stale comparison: the challenger is kept out and the reason says to re-run.
    """
    with _locked(path):
        registry = read(path)
        check_frozen(registry, frozen, path)
        current = registry["champion"]
        current_id = current["id"] if current else None
        metric = outcome["metric"]
        if current_id != champion_seen:
            decision = Decision(
                False,
                f"the champion changed to {current_id} while this run compared against "
                f"{champion_seen}; re-run to compare against the new champion",
            )
        else:
            decision = decide(
                metric,
                outcome["challenger_score"],
                outcome["champion_score"],
                current is not None,
                coverage(metric, outcome.get("metrics")),
                coverage(metric, outcome.get("champion_metrics")),
                champion_scored=outcome.get("champion_metrics") is not None,
                champion_error=outcome.get("champion_error"),
                replace_unscorable=replace_unscorable,
            )
        entry = outcome | {
            "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "champion": current_id,
            "promoted": decision.promote,
            "decision": _label(decision, outcome),
            "reason": decision.reason,
        }
        registry["frozen_test"] = registry["frozen_test"] or frozen
        registry["history"].append(entry)
        if decision.promote:
            registry["champion"] = _champion_record(entry)
        store.write_json(str(path), registry)
    return entry


def _label(decision: Decision, outcome: dict) -> str:
    if decision.promote:
        return "promoted"
    if decision.blocked:
        return "blocked"
    return "failed" if outcome.get("status") == "failed" else "kept"


def _champion_record(entry: dict) -> dict:
    keys = ("id", "run_dir", "metric", "challenger_score", "metrics", "lineage", "artifacts")
    record = {k: entry.get(k) for k in keys}
    record["score"] = record.pop("challenger_score")
    record["promoted_at"] = entry["decided_at"]
    return record


@contextlib.contextmanager
def _locked(path: Location) -> Iterator[None]:
    """Hold the registry lock; a timeout is a RegistryError, not a hang. A registry in a
    store is locked by an object there (linklm.store.exclusive), which every machine sees."""
    if store.is_url(path):
        try:
            with store.exclusive(str(path), "a retraining decision", LOCK_TIMEOUT_S):
                yield
        except StorageError as exc:
            raise RegistryError(str(exc)) from None
        return
    path = Path(path)
    file_lock = lock(path)
    try:
        file_lock.acquire()
    except Timeout:
        raise RegistryError(
            f"{path}: another run held the registry lock for {LOCK_TIMEOUT_S:.0f} s; "
            "try again when it has finished"
        ) from None
    try:
        yield
    finally:
        file_lock.release()


def history_row(entry: dict) -> dict:
    """One decision as a row of the registry's history table."""
    return {
        "decided_at": entry["decided_at"],
        "challenger": entry["id"],
        "decision": entry["decision"],
        "metric": entry["metric"],
        "challenger_score": entry["challenger_score"],
        "champion": entry["champion"],
        "champion_score": entry["champion_score"],
    }


def decision_markdown(entry: dict) -> str:
    """The decision, both scores and the lineage, as the UI's markdown artifact shows them."""
    lineage = entry["lineage"]
    versions = lineage.get("code_version") or {}
    rows = [
        ["decision", f"**{entry['decision']}**"],
        ["reason", entry["reason"]],
        ["metric", entry["metric"]],
        ["challenger", f"{entry['id']}: {_score(entry['challenger_score'])}"],
        ["champion before", f"{entry['champion'] or 'none'}: {_score(entry['champion_score'])}"],
        ["training data SHA256", f"`{lineage.get('data_sha256')}`"],
        ["frozen test SHA256", f"`{lineage.get('frozen_test_sha256')}`"],
        ["code version", f"linklm {versions.get('linklm')}, git `{versions.get('git')}`"],
        ["challenger run", entry.get("run_dir") or "-"],
        ["published to", entry.get("artifacts") or "-"],
    ]
    if entry.get("error"):
        rows.append(["error", entry["error"]])
    return f"# Retraining: {entry['decision']}\n\n" + summaries.table(["", ""], rows)


def _score(value: float | None) -> str:
    return "no score" if value is None else f"{value:.4g}"
