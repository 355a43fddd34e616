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


# the licence a fine-tuned model inherits from its base: the default model is this project's
# (Apache-2.0); Gemma derivatives are bound by the Gemma terms (the Hub's licence id "gemma")
LICENCES = {"linklm-default": "apache-2.0", "gemma-3-270m-gguf": "gemma"}


def base_licence(run: dict) -> str:
    """The Hub licence id of a run's base model: a registered name's, Gemma's for a Gemma hub
    id, a local base folder's own card's, else ``other`` (the card then names the base)."""
    name = run["config"]["model"]
    if name in LICENCES:
        return LICENCES[name]
    if "gemma" in name.lower() or "gemma" in str(run.get("base_model", "")).lower():
        return "gemma"
    folder = Path(name).expanduser()
    for readme in (folder / CARD_FILE, folder.parent / CARD_FILE):  # a model/ of a run
        if readme.is_file():
            from huggingface_hub import ModelCard

            licence = ModelCard.load(readme).data.to_dict().get("license")
            if licence:
                return licence
    return "other"


# (metrics.json key, metric name on the card, Hub metric type): what model-index reports
EVAL_METRICS = (
    (("channel", "top1_ranked"), "channel top-1 (ranked)", "accuracy"),
    (("channel", "top1"), "channel top-1 (greedy)", "accuracy"),
    (("channel", "top3"), "channel top-3", "accuracy"),
    (("throughput", "mae"), "throughput MAE (Mbps)", "mae"),
    (("throughput", "rmse"), "throughput RMSE (Mbps)", "rmse"),
)


def licence_text(run: dict) -> str:
    licence = base_licence(run)
    base = hub_base_model(run) or run.get("base_model") or run["config"]["model"]
    if licence == "gemma":
        return (
            f"A derivative of Gemma (base `{base}`): its use is governed by the Gemma Terms of "
            "Use and Prohibited Use Policy (ai.google.dev/gemma/terms), which pass on to anyone "
            "this model is shared with.\n"
        )
    if licence == "apache-2.0":
        return "Apache-2.0, like linklm and its default model (trained from scratch here).\n"
    return (
        f"The licence of the base model `{base}` applies (`{licence}`); check it before sharing.\n"
    )


def eval_results(metrics: dict | None) -> list:
    """The model's own figures of an evaluation as the card's ``model-index`` entries."""
    from huggingface_hub import EvalResult

    if not metrics:
        return []
    model = next((s for s in metrics["systems"] if s.get("kind") == "model"), None)
    if model is None:
        return []
    results = []
    for (part, key), name, metric_type in EVAL_METRICS:
        value = (model.get(part) or {}).get(key)
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="5 GHz link planning: channel and throughput",
                dataset_type="linklm-synthetic",
                dataset_name=f"linklm synthetic links ({metrics['rows']:,} {metrics['split']} rows)",
                dataset_split=metrics["split"],
                dataset_revision=metrics["dataset_sha256"],
                metric_type=metric_type,
                metric_name=name,
                metric_value=round(float(value), 4),
            )
        )
    return results


def card_data(run: dict, metrics: dict | None, adapter: bool, name: str):
    """The card's metadata (``huggingface_hub.ModelCardData``): base, licence, library,
    tags, dataset, and the evaluation as ``model-index``."""
    from huggingface_hub import ModelCardData

    # an adapter upload, or a QLoRA run saved before QLoRA merged (adapter/ is all it has)
    adapter_only = adapter or Path(run["model_dir"]).name == "adapter"
    licence = base_licence(run)
    return ModelCardData(
        base_model=hub_base_model(run),
        library_name="peft" if adapter_only else "transformers",
        license=licence,
        license_name="see-base-model" if licence == "other" else None,
        pipeline_tag="text-generation",
        language=["en"],
        tags=list(TAGS),
        datasets=[f"linklm-synthetic-{run['dataset_sha256'][:12]}"],
        model_name=name,
        eval_results=eval_results(metrics) or None,
    )


def _yaml_header(run: dict, metrics: dict | None, adapter: bool, name: str) -> str:
    return "---\n" + card_data(run, metrics, adapter, name).to_yaml() + "\n---\n"


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
        _yaml_header(run, metrics, adapter, run_dir.name),
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
        "## Licence\n",
        licence_text(run),
    ]
    return "\n".join(parts)


def write_card(run_dir: Path) -> Path:
    path = Path(run_dir) / CARD_FILE
    atomic.write_text(path, render(run_dir))
    return path
