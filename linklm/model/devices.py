"""Which device a model answers on: the GPU where there is one, else the CPU, and say so.

Evaluation, prediction and the ranking of channels run on the device ``choose`` returns:
``auto`` takes the first CUDA device when torch sees one (in bfloat16 where the GPU has it
natively), else the CPU in float32; ``cpu`` and ``cuda`` / ``cuda:N`` ask for one, and a
device that is not there is a one-line error before anything loads, never a silent fall
back to the CPU.
"""

from __future__ import annotations

import logging

import torch

from linklm.errors import LinkLMError

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
Device = str  # checked by ``check``: "auto", "cpu", "cuda", "cuda:N"


class DeviceError(LinkLMError):
    """A device that was asked for and is not there."""


def check(requested: Device) -> None:
    """The spelling alone, for a config's validator: the machine is asked in ``choose``."""
    kind, _, index = requested.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device {requested!r}: one of {DEVICE_CHOICES}")


def choose(requested: Device = "auto", announce: bool = True) -> torch.device:
    """The device to answer on, or a DeviceError saying why the one asked for is not there;
    ``announce`` logs the choice (off for a CLI's check before anything runs, which prints
    nothing but errors)."""
    check(requested)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":
        device = torch.device("cuda:0" if visible else "cpu")
        why = "" if visible else " (no CUDA device visible to torch)"
        if announce:
            log.info("answering on %s%s", describe(device), why)
        return device
    device = torch.device(requested)
    if device.type == "cuda":
        if not visible:
            raise DeviceError(
                f"device {requested}: no CUDA device is visible here (no GPU, no driver, or a "
                "CPU build of torch; torch 2.13.0 from PyPI needs an NVIDIA driver >= 580); "
                "use --device cpu or auto"
            )
        if (device.index or 0) >= visible:
            raise DeviceError(
                f"device {requested}: only {visible} CUDA device(s) visible (cuda:0.."
                f"cuda:{visible - 1}); use one of them or auto"
            )
    if announce:
        log.info("answering on %s", describe(device))
    return device


def precision(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU that computes it natively (Ampere and later), else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def describe(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)': what metrics.json and the logs record."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"
