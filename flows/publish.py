"""The publish flow: a run's model, tokenizer and model card to the Hugging Face Hub.

    python -m flows.publish runs/train/my-run --repo-id me/linklm-channel --private
    python -m flows.publish runs/train/my-run --repo-id me/linklm-channel --dry-run

``--dry-run`` (works offline) assembles the exact upload folder (default <run>/publish) and
loads it back with the Auto classes; without it the folder is pushed with huggingface_hub,
the token coming from HF_TOKEN or the Prefect Secret block ``hf-token`` (never logged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact

from flows.cli import ArgumentParser, run_cli
from linklm.errors import first_line
from linklm.model import models
from linklm.serving import publish
from tasks import predict as t
from tasks import secrets


@flow(name="publish")
def publish_flow(
    run_dir: Path,
    repo_id: str,
    private: bool = True,
    dry_run: bool = False,
    adapter: bool = False,
    out_dir: Path | None = None,
    allow_unevaluated: bool = False,
) -> dict:
    """Assemble, check that it loads, then push (unless dry_run)."""
    logger = get_run_logger()
    folder = t.assemble(run_dir, out_dir, adapter, allow_unevaluated)
    loaded = t.check_loads(folder)
    logger.info(
        "upload folder %s loads back: %s, %d parameters",
        folder,
        loaded["model_class"],
        loaded["parameters"],
    )
    result = {"folder": str(folder), "repo_id": repo_id, "dry_run": dry_run} | loaded
    base = publish.local_base(folder)
    if base:
        merged = (Path(run_dir) / "model").is_dir()
        result["warning"] = (
            f"the adapter's base is the local folder {base}, which has no hub id: Hub users "
            "cannot load it without that folder; "
            + ("publish the merged weights (no --adapter)" if merged else "share that folder too")
        )
        logger.warning(result["warning"])
    if dry_run:
        return result
    url = t.push(folder, repo_id, private, secrets.hf_token())
    create_link_artifact(key="published-model", link=url, link_text=repo_id)
    return result | {"url": url}


def check_repo_id(repo_id: str) -> None:
    """owner/name, spelled as the Hub allows (checked offline, so a dry run checks it too)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("expected owner/name")
    except HFValidationError as exc:
        reason = first_line(exc)
        raise publish.PublishError(f"--repo-id {repo_id!r}: not a Hub repo id ({reason})") from None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.publish", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    parser.add_argument("--private", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dry-run", action="store_true", help="assemble and check, push nothing")
    parser.add_argument(
        "--adapter", action="store_true", help="publish the LoRA adapter, not merged weights"
    )
    parser.add_argument("--out-dir", type=Path, help="upload folder (default <run>/publish)")
    parser.add_argument(
        "--allow-unevaluated",
        action="store_true",
        help="publish a run that was never evaluated (its card says so)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # fail before Prefect starts: a repo id the Hub would refuse, a missing or damaged run,
    # an --out-dir that assembling would wipe
    check_repo_id(args.repo_id)
    models.check_folder(publish.weights_dir(args.run_dir, args.adapter))
    publish.upload_folder(args.run_dir, args.out_dir)
    publish.check_evaluated(args.run_dir, args.allow_unevaluated)
    result = publish_flow(
        args.run_dir,
        args.repo_id,
        args.private,
        args.dry_run,
        args.adapter,
        args.out_dir,
        args.allow_unevaluated,
    )
    if "warning" in result:
        print(f"warning: {result['warning']}", file=sys.stderr)
    verb = "would upload" if args.dry_run else f"uploaded to {result.get('url')}"
    print(
        f"{verb}: {result['folder']} ({', '.join(result['files'])}); loads back as {result['model_class']}"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
