"""The model card of a run folder: README.md in the Hugging Face convention.

Written when a run is saved and rewritten when it is evaluated, always from the run's own
files (run.json, the dataset manifest, eval-*/metrics.json), so the card's numbers are the
numbers of the files next to it (a test compares them).
"""

from __future__ import annotations

import json
from pathlib import Path

from linklm import atomic
from linklm.errors import LinkLMError, first_line
from linklm.evaluation import summaries
from linklm.model.runs import RUN_FILE

CARD_FILE = "README.md"
TAGS = (
    "linklm",
    "wifi",
    "5ghz",
    "point-to-point",
    "link-planning",
    "channel-selection",
    "synthetic-data",
    "prefect",
)
HUB_BASES = {"gemma-3-270m-gguf": "google/gemma-3-270m"}


# what the card reads from run.json (and from its "config"): publish checks them up front
RUN_KEYS = (
    "config",
    "model_dir",
    "base_model",
    "dataset_sha256",
    "train_rows",
    "steps",
    "train_seconds",
    "tokens_per_second",
    "first_train_loss",
    "final_train_loss",
    "final_eval_loss",
)
CONFIG_KEYS = (
    "model",
    "mode",
    "target",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "lr_scheduler",
    "seed",
)
METRICS_KEYS = ("rows", "split", "dataset_sha256", "standing", "systems")


class CardError(LinkLMError):
    """A run's files that a model card cannot be written from, named."""


def latest_metrics(run_dir: Path) -> dict | None:
    """The test-split evaluation if there is one, else the newest evaluation, else None."""
    found = sorted(Path(run_dir).glob("eval-*/metrics.json"), key=lambda p: p.stat().st_mtime)
    preferred = [p for p in found if p.parent.name == "eval-test"]
    if not found:
        return None
    path = (preferred or found)[-1]
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not readable JSON ({first_line(exc)}); evaluate again") from None
    missing = [k for k in METRICS_KEYS if k not in metrics] if isinstance(metrics, dict) else []
    if not isinstance(metrics, dict) or missing:
        what = f"lacks {', '.join(missing)}" if missing else "not a JSON object"
        raise CardError(f"{path}: {what}; evaluate again")
    return metrics


def hub_base_model(run: dict) -> str | None:
    """A hub id for the YAML header where the base has one (never a local path)."""
    name = run["config"]["model"]
    if name in HUB_BASES:
        return HUB_BASES[name]
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    return name if looks_like_hub_id and not Path(name).exists() else None


def _yaml_header(run: dict, adapter: bool) -> str:
    lines = ["---"]
    base = hub_base_model(run)
    if base:
        lines.append(f"base_model: {base}")
    # an adapter upload, or a QLoRA run saved before QLoRA merged (adapter/ is all it has)
    adapter_only = adapter or Path(run["model_dir"]).name == "adapter"
    lines += [
        f"library_name: {'peft' if adapter_only else 'transformers'}",
        "license: apache-2.0",
        "pipeline_tag: text-generation",
        "language:\n- en",
        "tags:",
        *(f"- {t}" for t in TAGS),
        "datasets:",
        f"- linklm-synthetic-{run['dataset_sha256'][:12]}",
        "---",
    ]
    return "\n".join(lines) + "\n"


def _loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def training_table(run: dict) -> str:
    """How a run trained, from its run.json: the card's table and the train flow's artifact."""
    c = run["config"]
    rows = [
        ("base model", f"`{run['base_model']}` ({c['model']})"),
        ("mode", c["mode"]),
        ("target", c["target"]),
        ("dataset SHA256", f"`{run['dataset_sha256']}`"),
        ("training rows", f"{run['train_rows']:,}"),
        ("steps", run["steps"]),
        ("batch size x grad accum", f"{c['batch_size']} x {c['grad_accum']}"),
        ("learning rate / schedule", f"{c['learning_rate']} / {c['lr_scheduler']}"),
        ("seed", c["seed"]),
        ("train seconds", run["train_seconds"]),
        ("tokens/s", run["tokens_per_second"]),
        ("peak memory (MB)", summaries.peak_memory_text(run.get("peak_memory_mb"))),
        (
            "loss first -> last (train)",
            f"{_loss(run['first_train_loss'])} -> {_loss(run['final_train_loss'])}",
        ),
        ("validation loss", _loss(run["final_eval_loss"])),
    ]
    return summaries.table(["setting", "value"], rows)


def render(run_dir: Path, adapter: bool = False) -> str:
    """The card's text from the run folder's files; ``adapter`` for a card that goes with the
    adapter's files (a peft library header) rather than the merged model's."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / RUN_FILE).read_text())
    metrics = latest_metrics(run_dir)
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items() if v)
    parts = [
        _yaml_header(run, adapter),
        f"# {run_dir.name}\n",
        "A small language model fine-tuned with linklm to plan outdoor "
        "5 GHz point-to-point Wi-Fi links: given a link's geometry, tx power, noise floor, "
        "spectral scan of the available channels, weather and obstructions, it answers the "
        "channel to use and the throughput to expect.\n",
        "## Evaluation\n",
    ]
    if metrics:
        parts += [
            f"{metrics['rows']:,} rows of the {metrics['split']} split "
            f"(dataset SHA256 `{metrics['dataset_sha256']}`), model and baselines on the same "
            "rows:\n",
            summaries.standing_text(metrics["standing"]),
            summaries.systems_table(metrics["systems"]),
        ]
    else:
        parts.append("Not evaluated yet: run `python -m flows.evaluate --model <this folder>`.\n")
    parts += [
        "## Training\n",
        training_table(run),
        f"\nDataset SHA256 (the data manifest): `{run['dataset_sha256']}`. Versions: {versions}.\n",
        "## How to use\n",
        "```bash\npython -m flows.predict --model <this folder> --input links.csv "
        "--output predictions.csv\n```\n",
        "```python\nfrom linklm.serving.predict import Predictor\n\n"
        'answer = Predictor("<this folder>").predict_one(link)  # a dict of DATA_SPEC inputs\n```\n',
        "## Intended use and limits\n",
        "- Trained on **synthetic** links drawn from linklm's DATA_SPEC.md: free-space path "
        "loss, per-km weather and clutter loss, Fresnel-zone and obstruction loss, and a "
        "channel score of SNR minus a quarter of the scan level above the noise floor. It "
        "learned that physics, not a real radio environment; check its answers against a "
        "site survey before deploying a link.\n",
        "- Channels on the 4,900-6,100 MHz grid, bandwidths 20/40/80/160 MHz, distances and "
        "powers within DATA_SPEC.md's ranges; outside them the answers are not meaningful "
        "(`flows.predict` refuses such rows).\n",
        "- rssi_dbm and snr_db are never shown to the model (they would leak the label).\n",
    ]
    return "\n".join(parts)


def write_card(run_dir: Path) -> Path:
    path = Path(run_dir) / CARD_FILE
    atomic.write_text(path, render(run_dir))
    return path
