"""`labvirt inventory`: write every stack's TripleO files and the hypervisor's access files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labvirt.model import Lab
from labvirt.outputs import access, edpm, tripleo
from labvirt.session import Session
from labvirt.state import write_atomic

# what a stack directory may hold (older labvirt also wrote <stack>/inventory.yaml)
STACK_FILES = ("inventory.yaml", *tripleo.STACK_FILES)


@dataclass(frozen=True)
class Written:
    path: Path
    what: str
    stack: str | None


def dump_yaml(data: Any, header: str | None = None) -> str:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)
    return (f"# {header}\n" if header else "") + text


def default_output_dir(lab: Lab) -> Path:
    return Path.cwd() / f"{lab.name}-inventory"


def write_inventory(session: Session, out_dir: Path | None, stack: str | None) -> list[Written]:
    lab = session.lab()
    out = out_dir or default_output_dir(lab)
    deployed = [s for s in lab.stacks if s.members]
    stacks = [lab.stack(stack)] if stack else deployed
    tripleo.check_stacks(stacks)  # a role THT does not define: refuse before writing
    written: list[Written] = []

    def put(path: Path, text: str, what: str, stack_name: str | None) -> None:
        write_atomic(path, text)
        written.append(Written(path, what, stack_name))

    origin = f"written by labvirt for lab {lab.name}; regenerate with `labvirt inventory`"
    if not stack:  # RHOSO 18 bundle; refuses (InputError) before anything is written
        for name, text, what in edpm.bundle(lab, session.key_path(lab), origin):
            put(out / edpm.BUNDLE_DIR / name, text, what, None)
    for s in stacks:
        for name, text, what in tripleo.stack_bundle(lab, s, deployed, origin):
            put(out / s.name / name, text, what, s.name)
    if not stack:
        for name, text, what in tripleo.lab_files(lab, stacks, origin):
            put(out / name, text, what, None)
    key, known = session.key_path(lab), session.known_hosts_path()
    put(out / "hypervisor-inventory.yaml",
        dump_yaml(access.hypervisor_inventory(lab, key, known), origin),
        "inventory for ansible on the hypervisor", None)
    put(out / "ssh_config", access.ssh_config(lab, key, known), "ssh -F config", None)
    put(out / "hosts", access.hosts_file(lab), "/etc/hosts lines", None)
    if not stack:
        written.extend(_remove_stale_stacks(out, {s.name for s in stacks}, origin))
    return written


def _remove_stale_stacks(out: Path, current: set[str], origin: str) -> list[Written]:
    """A stack that lost its nodes must not leave deployable files behind. Only directories
    holding nothing but files labvirt wrote for this lab are removed."""
    removed = []
    for d in sorted(p for p in out.iterdir()
                    if p.is_dir() and p.name not in current and p.name != edpm.BUNDLE_DIR):
        files = [f for f in d.rglob("*") if not f.is_dir()]
        ours = all(
            f.is_file() and f.name in STACK_FILES
            and f.read_text(errors="replace").startswith(f"# {origin}")
            for f in files
        )
        if files and ours:
            for f in files:
                f.unlink()
            for sub in sorted(d.rglob("*"), reverse=True):  # deepest first
                sub.rmdir()
            d.rmdir()
            removed.append(Written(d, "removed: the stack has no nodes now", d.name))
    return removed
