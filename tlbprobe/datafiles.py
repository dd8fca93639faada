"""Where tlbprobe's data files live: one resolver for the checkout and the installed wheel.

The model parameters (analysis/model.yaml), the job files (workloads/), the guest config
fragment and our patch (kernels/config/, kernels/patches/) stay in the top-level folders
of the source tree, where a developer edits them. A wheel installs the same files under
``<prefix>/share/tlbprobe/`` (pyproject.toml ``data-files``), since a package directory
cannot hold folders outside it. Every module asks here, so both layouts work and neither
is spelled out anywhere else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

from .errors import InputError

#: The source tree, when tlbprobe runs from a checkout (or an editable install).
CHECKOUT = Path(__file__).resolve().parents[1]


def candidates(name: str) -> List[Path]:
    """Where a top-level data folder may be, in the order they are tried."""
    return [CHECKOUT / name, Path(sys.prefix) / "share" / "tlbprobe" / name]


def data_dir(name: str) -> Path:
    """A data folder of tlbprobe ('analysis', 'workloads', 'kernels'), wherever it is installed."""
    for path in candidates(name):
        if path.is_dir():
            return path
    raise InputError(f"tlbprobe's {name}/ folder is missing (looked in "
                     f"{', '.join(str(p) for p in candidates(name))}): reinstall tlbprobe")


def locate(*parts: str) -> Path:
    """A path under a data folder, e.g. locate('analysis', 'model.yaml'): the first
    candidate that exists, else the checkout's (so the caller's own check names it)."""
    for base in candidates(parts[0]):
        if base.joinpath(*parts[1:]).exists():
            return base.joinpath(*parts[1:])
    return CHECKOUT.joinpath(*parts)
