"""Publish a run to the Hugging Face Hub: assemble the upload folder, check it, push it.

The upload folder is exactly what the Hub receives: the weights (merged model, or the
adapter with ``adapter=True`` or for a run that has only that), the tokenizer,
``linklm_prompt.json``, the model card and the run's metrics. ``check_loads`` loads it back
with the Auto classes before anything leaves the machine, so a dry run proves the push
would be usable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from linklm import atomic
from linklm.errors import LinkLMError
from linklm.evaluation import card
from linklm.model import models
from linklm.model.models import ADAPTER_CONFIG
from linklm.model.runs import RUN_FILE, run_weights

PUBLISH_DIR = "publish"


class PublishError(LinkLMError):
    """The run cannot be published as asked."""


def run_record(run_dir: Path) -> dict:
    """The run's run.json, or what is wrong with it."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise PublishError(f"{run_dir}: not a finished training run (no {RUN_FILE})")
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PublishError(
            f"{path}: not readable JSON ({exc}); the run cannot be published"
        ) from None
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise PublishError(
            f"{path}: not a run record (a JSON object with a config object); the run cannot be "
            "published"
        )
    missing = [k for k in card.RUN_KEYS if k not in run]  # what the card reads
    missing += [f"config.{k}" for k in card.CONFIG_KEYS if k not in run["config"]]
    if missing:
        raise PublishError(f"{path}: lacks {', '.join(missing)}; the run cannot be published")
    return run


def weights_dir(run_dir: Path, adapter: bool = False) -> Path:
    run_dir = Path(run_dir)
    run_record(run_dir)
    weights = run_weights(run_dir, adapter)
    if weights is None:
        order = ("adapter",) if adapter else ("model", "adapter")
        raise PublishError(f"{run_dir}: no {' or '.join(order)}/ folder to publish")
    return weights


def upload_folder(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Where the upload folder goes (default <run>/publish), checked: assembling replaces
    the whole folder, so it must be a new one or an upload folder made before (files only,
    run.json among them), never the run folder, a folder holding it, or someone's files."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / PUBLISH_DIR
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run or out in run.parents:
        raise PublishError(f"{out_dir}: holds the run folder {run_dir}; choose another --out-dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise PublishError(f"{out_dir}: a file, not a folder; choose another --out-dir")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        made_by_publish = (out_dir / RUN_FILE).is_file() and all(
            p.is_file() for p in out_dir.iterdir()
        )
        if not made_by_publish:
            raise PublishError(
                f"{out_dir}: not empty and not an upload folder made by publish (it would be "
                "replaced as a whole); choose a new --out-dir"
            )
    return out_dir


def check_evaluated(run_dir: Path, allow_unevaluated: bool = False) -> dict | None:
    """The run's evaluation (what its card reports); a run never evaluated is refused unless
    ``allow_unevaluated``: a model on the Hub without a figure asks its users to trust it."""
    metrics = card.latest_metrics(run_dir)
    if metrics is None and not allow_unevaluated:
        raise PublishError(
            f"{run_dir}: never evaluated, so its card would have no figures; run python -m "
            f"flows.evaluate --model {run_dir} first, or pass --allow-unevaluated"
        )
    return metrics


def assemble(
    run_dir: Path,
    out_dir: Path | None = None,
    adapter: bool = False,
    allow_unevaluated: bool = False,
) -> Path:
    """The upload folder (default <run>/publish), replaced atomically."""
    run_dir = Path(run_dir)
    source = weights_dir(run_dir, adapter)
    out_dir = upload_folder(run_dir, out_dir)
    check_evaluated(run_dir, allow_unevaluated)
    card.write_card(run_dir)  # fresh from the run's files
    run = run_record(run_dir)
    with atomic.atomic_dir(out_dir) as tmp:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        record = json.loads((run_dir / RUN_FILE).read_text())
        if (tmp / ADAPTER_CONFIG).exists() and _name_hub_base(
            tmp / ADAPTER_CONFIG, card.hub_base_model(run)
        ):  # the upload's run.json records the file as uploaded
            hashes = record.get(models.FILES_KEY, {}).get("adapter")
            if isinstance(hashes, dict) and ADAPTER_CONFIG in hashes:
                hashes[ADAPTER_CONFIG] = atomic.sha256_file(tmp / ADAPTER_CONFIG)
        # the card of what is uploaded: an adapter's says so in its library header
        upload_card = card.render(run_dir, adapter=(tmp / ADAPTER_CONFIG).exists())
        (tmp / card.CARD_FILE).write_text(upload_card)
        (tmp / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        metrics = card.latest_metrics(run_dir)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out_dir


def _name_hub_base(adapter_config: Path, hub_id: str | None) -> bool:
    """peft records the folder the adapter trained on as its base, a path that means nothing
    on the Hub; where the base has a hub id, that is written in instead. (For
    gemma-3-270m-gguf that is google/gemma-3-270m, whose Q4_K_M quantisation the adapter
    trained on: close to the original weights, not equal.)"""
    if hub_id:
        settings = json.loads(adapter_config.read_text())
        settings["base_model_name_or_path"] = hub_id
        adapter_config.write_text(json.dumps(settings, indent=2) + "\n")
    return bool(hub_id)


def local_base(folder: Path) -> str | None:
    """The local folder an adapter in ``folder`` needs as its base, or None (merged weights,
    or a base with a hub id): a Hub user without that folder cannot load the adapter."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.exists():
        return None
    base = json.loads(path.read_text()).get("base_model_name_or_path") or ""
    return base if Path(base).is_absolute() or Path(base).exists() else None


def check_loads(folder: Path) -> dict:
    """Load the folder back as a user of the Hub would (Auto classes; an adapter with peft,
    onto the local base it trained on), after checking its weights are the ones trained
    (the SHA256s run.json recorded, which travel in the folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    models.check_folder(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if (folder / ADAPTER_CONFIG).exists():
        from peft import PeftModel

        # onto the base it trained on (run.json), which is here even where the adapter now
        # names the base's hub id and the hub is offline
        base = json.loads((folder / RUN_FILE).read_text())["base_model"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    return {
        "model_class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "files": sorted(p.name for p in folder.iterdir()),
    }


def push(folder: Path, repo_id: str, private: bool, token: str | None) -> str:
    """Create the repo if needed and upload the folder; returns the repo URL."""
    if not token:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or create the Prefect Secret block 'hf-token'"
        )
    from huggingface_hub import HfApi, constants

    # The project keeps the Hub offline by default (nothing downloads at run time); a push
    # is an explicit request to go online, so offline mode is lifted for its duration only.
    was_offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model")
    except Exception as exc:  # noqa: BLE001  (network, auth, hub: one clear line each)
        # The message can quote the server's answer, which may echo the credentials sent.
        first = (str(exc).splitlines() or [""])[0].replace(token, "***")
        raise PublishError(f"push to {repo_id} failed ({type(exc).__name__}): {first}") from None
    finally:
        constants.HF_HUB_OFFLINE = was_offline
    return str(url)
