"""Files shipped with labvirt: templates and the layouts of overrides/.

In a wheel they live inside the package (labvirt/templates, labvirt/overrides); in a
source checkout or editable install, at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"labvirt's {name}/ directory is missing from the installation")


def templates_dir() -> Path:
    return _find("templates")


def overrides_dir() -> Path:
    return _find("overrides")


def default_layout() -> Path:
    """The embedded default lab: the Glance DCN experiments' layout."""
    return overrides_dir() / "glance-dcn.yml"
