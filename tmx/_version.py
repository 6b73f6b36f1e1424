"""The installed version of tmx, one definition for the package (modules import it from here,
never from the package root)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tmx-measures")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
