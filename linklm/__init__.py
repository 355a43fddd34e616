"""linklm: the domain and ML logic of the link-planning platform (no Prefect import here)."""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("linklm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

# peft imports bitsandbytes (the dev and gpu extras) as it loads; on a CPU with AVX512-BF16,
# bitsandbytes >= 0.50 then asks the hub for a CPU 4-bit kernel, and with the hub offline
# (the project's default) it logs two warnings on every command. linklm never runs 4-bit
# on a CPU (qlora needs CUDA), so those two lines say nothing a user can act on.
UNUSED_HUB_KERNEL = "kernels-community/quantization-bitsandbytes"
HUB_KERNEL_LOGGERS = ("kernels._internals.hf_hub", "bitsandbytes.backends.cpu.ops")


def _not_about_unused_hub_kernel(record: logging.LogRecord) -> bool:
    return UNUSED_HUB_KERNEL not in record.getMessage()


for _name in HUB_KERNEL_LOGGERS:
    logging.getLogger(_name).addFilter(_not_about_unused_hub_kernel)
