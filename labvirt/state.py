"""The lab's own state: stack assignments and snapshot records, in one small JSON file.

libvirt is the record of what exists; this file records only what libvirt cannot: which
stack a node is in when that differs from the layout, stacks made with `labvirt assign`,
and lab snapshots. It is written atomically (temporary file, fsync, rename), so a crash
leaves either the old or the new state. A lock file serialises labvirt runs on one lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvirt.errors import StateError
from labvirt.model import Assignment

STATE_VERSION = 1


def default_state_root() -> Path:
    env = os.environ.get("LABVIRT_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "labvirt"


@dataclass
class LabState:
    """What `state.json` holds. Plain data; `StateStore` reads and writes it."""

    stacks: dict[str, str] = field(default_factory=dict)  # stacks made by `assign`: name -> role
    assignments: dict[str, Assignment] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "stacks": {k: {"role": v} for k, v in sorted(self.stacks.items())},
            "assignments": {
                k: {"stack": a.stack, "role": a.role} for k, a in sorted(self.assignments.items())
            },
            "snapshots": self.snapshots,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> LabState:
        try:
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {data.get('version')!r}"
                                 if isinstance(data, dict) else "not a JSON object")
            stacks = {str(k): str(v["role"]) for k, v in data.get("stacks", {}).items()}
            assignments = {
                str(k): Assignment(v.get("stack"), v.get("role"))
                for k, v in data.get("assignments", {}).items()
            }
            snapshots = dict(data.get("snapshots", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(
                f"the lab state {where} is damaged: {exc}",
                "move it away to start from the layout's stacks (snapshot records are lost)",
            ) from None
        return cls(stacks, assignments, snapshots)


class StateStore:
    def __init__(self, root: Path, lab: str) -> None:
        self.dir = root / lab
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "lock"

    def load(self) -> LabState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return LabState()
        except OSError as exc:
            raise StateError(f"cannot read the lab state {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(
                f"the lab state {self.path} is not valid JSON (line {exc.lineno}): {exc.msg}",
                "move it away to start from the layout's stacks",
            ) from None
        return LabState.from_json(data, str(self.path))

    def save(self, state: LabState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(state.to_json(), indent=2, sort_keys=False) + "\n")

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold the lab's lock; refuse at once, naming the holder, when another run has it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another run"
                raise StateError(
                    f"the lab is busy: {holder}",
                    "wait for it to finish; the lock goes away with the process",
                ) from None
            info = (f"labvirt {command} (pid {os.getpid()} on {socket.gethostname()}, "
                    f"since {time.strftime('%H:%M:%S')})")
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sys.platform.startswith("linux"):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
