"""Run folders: their layout, the lock of the run training into one, resume, and checkpoints.

A run folder (``out_dir/run_name``) holds what one training run made::

    train_config.json   the settings it started with and the SHA256 of the data it trains on
    checkpoints/        Trainer checkpoints (weights, optimizer, scheduler, RNG state)
    model/              the weights that answer (merged for LoRA and QLoRA)
    adapter/            the LoRA or QLoRA adapter
    history.json        the Trainer's log history
    run.json            the summary, written last: a folder with it is a finished run
    README.md           the model card

Prediction, evaluation, publishing and the card read run folders through this module, so
none of them imports training (which loads the Trainer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from linklm import atomic, store
from linklm.config import TrainConfig
from linklm.data import dataset
from linklm.errors import LinkLMError, StorageError, first_line

log = logging.getLogger(__name__)

# the Trainer's state file, written last into a checkpoint (transformers' TRAINER_STATE_NAME,
# spelled here so that reading a run folder does not import the Trainer; a test pins them equal)
TRAINER_STATE = "trainer_state.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's settings: the folder holds an adapter
CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "train_config.json"
DATASET_KEY = "dataset_sha256"  # in CONFIG_FILE beside the settings: the data trained on


# what a checkpoint needs to continue exactly: weights beside these (the Trainer skips the
# optimizer when scheduler.pt is missing and the RNG state when rng_state.pth is)
CHECKPOINT_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth")
# a run on several processes saves one RNG state per rank instead: rng_state_0.pth, ...
RNG_PER_RANK = "rng_state_*.pth"
# what a checkpoint's weights are made of: a resume cannot change them
FIXED_ON_RESUME = ("model", "mode", "target", "lora_r", "lora_alpha", "lora_targets", "mix")


def run_weights(run_dir: Path, adapter: bool = False) -> Path | None:
    """The weights folder of a finished run: model/ (full or merged weights), else adapter/
    (QLoRA runs made before QLoRA had a merged export saved only that); with ``adapter``,
    adapter/ only. An upload folder made by publish (run.json beside the weights, as a Hub
    download has it) is its own weights folder. None when ``run_dir`` is not a finished run
    or holds no weights, so each caller can say what that means for it."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).exists():
        return None
    for sub in ("adapter",) if adapter else ("model", "adapter"):
        if (run_dir / sub).is_dir():
            return run_dir / sub
    beside = (ADAPTER_CONFIG,) if adapter else ("config.json", ADAPTER_CONFIG)
    return run_dir if any((run_dir / name).is_file() for name in beside) else None


class TrainingError(LinkLMError):
    """A training run that cannot start or continue, with what to do about it."""


def saved_config(run_dir: Path) -> dict | None:
    """The settings a run started with (None for a run made before they were saved)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        started = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{path}: not readable JSON ({exc}); cannot resume this run") from None
    if not isinstance(started, dict):
        raise TrainingError(f"{path}: not a JSON object of settings; cannot resume this run")
    return started


def resumed(config: TrainConfig) -> TrainConfig:
    """For a resume, the settings the run started with, with the ones given again on top.

    Given means set explicitly (pydantic's ``model_fields_set``: a CLI option typed, a
    keyword passed), so ``TrainConfig(run_name="x", resume=True)`` continues run x as it
    started, from Python as from the CLI. Settings the checkpoint's weights are made of
    (``FIXED_ON_RESUME``) cannot change: that is a new run, refused before anything loads."""
    if not config.resume:
        return config
    run_dir = run_dir_of(config)
    path = run_dir / CONFIG_FILE
    started = saved_config(run_dir)
    if started is None:
        if _checkpoints(run_dir):
            raise TrainingError(
                f"{path} is missing: the settings its checkpoints were trained with are unknown, "
                "so the run cannot continue as it started; restore the file, or train a new "
                "run_name"
            )
        return config
    from linklm.model import examples  # torch and datasets: only where a run resumes

    trained_on = started.pop(DATASET_KEY, None)
    split_before = started.pop(examples.SPLIT_KEY, None)
    try:
        before = TrainConfig(**started)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"])) or "settings"
        raise TrainingError(
            f"{path}: {where}: {error['msg']} (saved by another version?); cannot resume this run"
        ) from None
    given = config.model_dump(include=config.model_fields_set)
    after = TrainConfig(**(before.model_dump() | given | {"resume": True}))
    changed = [
        f"{name} {getattr(before, name)!r} -> {getattr(after, name)!r}"
        for name in FIXED_ON_RESUME
        if getattr(before, name) != getattr(after, name)
    ]
    if changed:
        raise TrainingError(
            f"{run_dir}: a resume keeps the settings its checkpoints were trained "
            f"with ({', '.join(changed)}); train a new run_name for that"
        )
    now = dataset.read_manifest(after.data_dir)["dataset_sha256"]
    if trained_on is not None and now != trained_on:
        raise TrainingError(
            f"{after.data_dir}: dataset {now[:12]}... is not the one run {run_dir.name} trained on "
            f"({trained_on[:12]}...); a resume continues on the same data: give that dataset's "
            "data_dir, or train a new run_name"
        )
    split_now = examples.split_record(after.data_dir, dataset.read_manifest(after.data_dir))
    if split_before is not None and split_now != split_before:
        raise TrainingError(
            f"{after.data_dir}: its shards split the rows otherwise ({_split_text(split_now)}) "
            f"than when run {run_dir.name} started ({_split_text(split_before)}); a resume "
            "continues on the same training rows: write the shards with that split again, or "
            "train a new run_name"
        )
    return after


def _split_text(split: dict) -> str:
    return f"train {split['train']}, val {split['val']}, salt {split['salt']!r}"


def _checkpoints(run_dir: Path) -> list[Path]:
    return list((run_dir / CHECKPOINTS).glob("checkpoint-*"))


def run_dir_of(config: TrainConfig) -> Path:
    name = (
        config.run_name
        or f"{Path(config.model).name}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return config.out_dir / name


def checkpoints_url(config: TrainConfig) -> str | None:
    """Where the run's checkpoints go in the store, or None when it keeps them locally."""
    shared = store.artifacts_url(config.artifacts_url)
    if not config.store_checkpoints or shared is None or config.run_name is None:
        return None
    return store.join(store.run_url(shared, config.run_name), CHECKPOINTS)


def from_store(config: TrainConfig) -> TrainConfig:
    """A run that keeps its checkpoints in the store and has none on this machine: its
    newest checkpoint there and its settings are downloaded, and it resumes from them (the
    worker that trained it died, or the run is retried elsewhere). Anything else as given."""
    remote = checkpoints_url(config)
    run_dir = run_dir_of(config)
    if remote is None or config.dry_run or (run_dir / RUN_FILE).exists() or _checkpoints(run_dir):
        return config
    run_url = remote.rsplit("/", 1)[0]
    if store.has_run(store.artifacts_url(config.artifacts_url), config.run_name):
        raise TrainingError(
            f"{run_url}: a finished run of this name is in the store; choose another run_name"
        )
    found = store.latest_published(remote, "checkpoint-")
    if found is None:
        return config
    step, url = found
    settings = store.read_json(store.join(run_url, CONFIG_FILE))
    if settings is None:
        raise TrainingError(
            f"{run_url}/{CONFIG_FILE} is missing: the settings its checkpoints were trained "
            "with are unknown, so the run cannot continue; train a new run_name"
        )
    store.download_folder(url, run_dir / CHECKPOINTS / f"checkpoint-{step}")
    atomic.write_json(run_dir / CONFIG_FILE, settings)
    log.info("%s: resuming from step %d of the store (%s)", run_dir, step, url)
    return config.model_copy(update={"resume": True})


@contextlib.contextmanager
def store_lease(config: TrainConfig, owner: dict) -> Iterator[store.Lease | None]:
    """The run's lease in the store while it trains (``store.Lease``), for a run whose
    checkpoints are kept there; None for any other run."""
    remote = checkpoints_url(config)
    if remote is None or config.dry_run:
        yield None
        return
    lease = store.Lease(remote.rsplit("/", 1)[0], owner | {"run_name": config.run_name})
    try:
        lease.acquire()
    except StorageError as exc:
        raise TrainingError(str(exc)) from None
    try:
        yield lease
    finally:
        lease.release()


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.split("-")[-1])
    except ValueError:
        return -1


def _unfinished_saves(folder: Path) -> list[Path]:
    """Checkpoints a kill cut short: the Trainer writes trainer_state.json last."""
    return [c for c in folder.glob("checkpoint-*") if not (c / TRAINER_STATE).exists()]


def _require_started(run_dir: Path) -> None:
    if not (run_dir / CONFIG_FILE).exists() and not (run_dir / CHECKPOINTS).exists():
        raise TrainingError(
            f"{run_dir}: no run started there, nothing to resume; train without resume"
        )


def last_checkpoint(run_dir: Path) -> Path | None:
    """Where a resume starts: the newest finished checkpoint, checked whole, or None.

    A run killed mid-save leaves a checkpoint without trainer_state.json (written last);
    it holds nothing a resume can use, so it is removed and the one before is used. A run
    killed before its first save resumes from step 0. A finished checkpoint that does not
    read back (truncated weights, bad JSON) is damage, not an interruption: a clear error.
    """
    folder = run_dir / CHECKPOINTS
    _require_started(run_dir)
    for unfinished in _unfinished_saves(folder) if folder.exists() else []:
        log.warning("%s: unfinished save of an interrupted run, removed", unfinished)
        shutil.rmtree(unfinished)
    found = sorted(folder.glob("checkpoint-*"), key=_checkpoint_step) if folder.exists() else []
    if not found:
        log.warning("%s: no finished checkpoint yet, resuming from step 0", run_dir)
        return None
    latest = found[-1]
    weights = [
        latest / n
        for n in ("model.safetensors", "adapter_model.safetensors")
        if (latest / n).exists()
    ]
    state = [latest / name for name in CHECKPOINT_STATE]
    if not state[2].exists() and any(latest.glob(RNG_PER_RANK)):
        state[2:] = sorted(latest.glob(RNG_PER_RANK))
    missing = [p.name for p in state if not p.exists()]
    if not weights:
        missing.append("model.safetensors")
    if not missing:
        try:
            from safetensors import safe_open

            with safe_open(str(weights[0]), framework="pt") as fh:
                list(fh.keys())
            json.loads((latest / TRAINER_STATE).read_text())
            for path in state:
                _check_zip(path)
        except Exception as exc:  # noqa: BLE001  (any unreadable file means the same fix)
            missing.append(f"readable weights/state ({type(exc).__name__}: {first_line(exc)})")
    if missing:
        raise TrainingError(
            f"{latest}: incomplete checkpoint (missing {', '.join(missing)}); delete it to resume "
            "from the one before, or train without resume"
        )
    return latest


def _check_zip(path: Path) -> None:
    """torch.save writes a zip archive: every member's CRC is checked (a cut-short file has
    no central directory at all). Raises zipfile.BadZipFile naming the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise zipfile.BadZipFile(f"{path.name}: {exc}") from None
    if bad is not None:
        raise zipfile.BadZipFile(f"{path.name}: {bad} does not match its checksum")


@contextlib.contextmanager
def run_lock(config: TrainConfig) -> Iterator[Path]:
    """Hold the run folder while training into it: a second run of the same name fails."""
    run_dir = run_dir_of(config)
    held = atomic.claim_folder(
        run_dir,
        lambda lock_file: TrainingError(
            f"{run_dir}: another run is training into this folder (lock {lock_file}); "
            "wait for it or choose another run_name"
        ),
    )
    try:
        yield run_dir
    finally:
        held.release()


def bytes_needed(config: TrainConfig, base: str) -> int:
    """About the disk a run of ``base`` (a local model folder; 0 for a hub id) takes: the
    saved model, and the checkpoints kept at once (one more while the newest is written)
    with their optimizer state (Adam's two moments: twice the trained weights). LoRA
    checkpoints hold the adapters only, counted at a tenth of the weights."""
    folder = Path(base)
    if not folder.is_dir():
        return 0
    weights = sum(
        p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")
    )
    per_checkpoint = 3 * weights if config.mode == "full" else weights // 10
    return weights + (config.save_total_limit + 1) * per_checkpoint


def check_run_dir(config: TrainConfig) -> Path:
    """What the run folder allows, before anything loads: never a finished run trained over
    (a resume too); a resume needs a started run, a fresh run a folder without one. Under the
    run's lock, so a run training there now is named at once. The checkpoint a resume starts
    from is checked when the run takes the folder (``last_checkpoint``)."""
    run_dir = run_dir_of(config)
    if config.dry_run:
        return run_dir
    if (run_dir / RUN_FILE).exists():
        what = "nothing to resume" if config.resume else "choose another run_name"
        raise TrainingError(f"{run_dir}: a finished run is already there; {what}")
    if config.resume:
        _require_started(run_dir)  # before the lock would make the folder
    with run_lock(config):
        if not config.resume and ((run_dir / CONFIG_FILE).exists() or _checkpoints(run_dir)):
            raise TrainingError(
                f"{run_dir}: an interrupted run is there (its settings or checkpoints); resume "
                "continues it, or choose another run_name"
            )
    return run_dir
