"""One labvirt run's view of a lab: which layout files, which state directory.

Loads the layout (layered files or the embedded default), the lab's state, and builds the
model with the state's stack assignments applied. Commands start here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from labvirt.layout.loader import load_layers
from labvirt.layout.spec import LayoutSpec, read_layout
from labvirt.model import Lab, build_lab
from labvirt.resources import default_layout
from labvirt.state import LabState, StateStore, default_state_root

DEFAULT_LAYOUT_NAME = "overrides.yml"


def resolve_layout_files(files: list[Path], cwd: Path | None = None) -> list[Path]:
    """`-f` files as given; else ./overrides.yml when present; else the embedded default."""
    if files:
        return files
    local = (cwd or Path.cwd()) / DEFAULT_LAYOUT_NAME
    if local.is_file():
        return [local]
    return [default_layout()]


@dataclass
class Session:
    files: list[Path] = field(default_factory=list)
    state_root: Path = field(default_factory=default_state_root)

    @cached_property
    def layout_files(self) -> list[Path]:
        return resolve_layout_files(self.files)

    @cached_property
    def spec(self) -> LayoutSpec:
        return read_layout(load_layers(self.layout_files))

    @property
    def lab_name(self) -> str:
        return self.spec.labvirt.name or self.spec.vm_prefix

    @cached_property
    def store(self) -> StateStore:
        return StateStore(self.state_root, self.lab_name)

    def load_state(self) -> LabState:
        return self.store.load()

    def lab(self, state: LabState | None = None) -> Lab:
        state = state if state is not None else self.load_state()
        return build_lab(self.spec, state.stacks, state.assignments)

    @property
    def state_dir(self) -> Path:
        return self.store.dir

    def key_path(self, lab: Lab) -> Path:
        return Path(lab.ssh_key).expanduser() if lab.ssh_key else self.state_dir / "id_ed25519"

    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"
