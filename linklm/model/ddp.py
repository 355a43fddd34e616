"""Training on several processes: DDP under torchrun, a child of the process that asked.

``launch`` runs ``torchrun`` (``torch.distributed.run``) with the config's
``nproc_per_node``, ``nnodes``, ``node_rank``, ``master_addr`` and ``master_port``; every
rank runs ``python -m linklm.model.training`` (``training.run_rank``): it prepares the data and the model, trains with
the Trainer (which wraps the model in DistributedDataParallel: gloo on the CPU, NCCL on
GPUs), and rank 0 alone writes the run folder (checkpoints, model, run.json, which states
the world size and the global batch). The parent holds the run's lock and the dataset's
shared lock for the whole launch, as a one-process run does, and relays the ranks' output
to its log.

Each rank sees ``batch_size`` rows a step, so a step trains on
``batch_size x grad_accum x world_size`` rows: the same global batch as one process with
``batch_size x world_size``.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from linklm.config import TrainConfig
from linklm.errors import first_line
from linklm.model.runs import RUN_FILE, TrainingError, run_dir_of

log = logging.getLogger(__name__)

TOKEN_ENV = "LINKLM_DDP_HF_TOKEN"  # the token reaches the ranks by environment, never argv


def rank() -> int:
    """This process's global rank under torchrun (0 outside it)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True for the one process that writes the run folder and logs progress."""
    return rank() == 0


def torchrun_command(config: TrainConfig, config_file: Path, checkpoint: Path | None) -> list:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={config.nproc_per_node}",
        f"--nnodes={config.nnodes}",
        f"--node-rank={config.node_rank}",
        f"--master-addr={config.master_addr}",
        f"--master-port={config.master_port}",
        "-m",
        "linklm.model.training",  # its __main__ is one rank
        str(config_file),
        str(checkpoint or ""),
    ]


def launch(config: TrainConfig, checkpoint: Path | None, token: str | None = None) -> dict:
    """Train ``config`` on its processes and return the run summary rank 0 saved (on a
    machine of node_rank > 0, which saves nothing, where the run was written)."""
    run_dir = run_dir_of(config)
    with tempfile.TemporaryDirectory(prefix="linklm-ddp-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(config.model_dump_json())
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        if token:
            env[TOKEN_ENV] = token
        command = torchrun_command(config, config_file, checkpoint)
        world = config.nproc_per_node * config.nnodes
        log.info("training on %d processes (torchrun, %d per node)", world, config.nproc_per_node)
        last = _relay(command, env)
    if config.node_rank > 0:
        return {"run_dir": str(run_dir), "node_rank": config.node_rank, "saved_by": "node 0"}
    summary_file = run_dir / RUN_FILE
    if not summary_file.exists():
        return {"stopped_at_step": None, "run_dir": str(run_dir), "output": last[-5:]}
    import json

    return json.loads(summary_file.read_text())


def _relay(command: list, env: dict) -> list[str]:
    """Run torchrun, logging every line its ranks print; raise with the last ones on failure."""
    last: collections.deque[str] = collections.deque(maxlen=20)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in process.stdout:
            line = line.rstrip()
            if line:
                last.append(line)
                log.info("%s", line)
        code = process.wait()
    finally:
        if process.poll() is None:  # this process is being stopped: so are the ranks
            process.terminate()
            process.wait(10)
    if code != 0:
        error = next((x for x in reversed(last) if "Error" in x), last[-1] if last else "")
        raise TrainingError(
            f"training on several processes failed (torchrun exit {code}): {first_line(error)}"
        )
    return list(last)
