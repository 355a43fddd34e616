"""linklm: the domain and ML logic of the link-planning platform (no Prefect import here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("linklm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
