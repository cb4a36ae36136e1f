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
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labvirt.errors import StateError, StateFileError
from labvirt.layout.spec import HOSTNAME_RE, ROLE_RE, stack_name_problem
from labvirt.model import Assignment

STATE_VERSION = 1
# far above any real lab's state (a few KiB): a bound, so a wrong file cannot exhaust memory
MAX_STATE_BYTES = 16 * 1024 * 1024


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
        """Read what `to_json` wrote; every name is checked as the layout's names are, since
        stack names become directories of `labvirt inventory` and node names file names."""
        try:
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"unknown state version {data.get('version')!r}"
                                 if isinstance(data, dict) else "not a JSON object")
            stacks: dict[str, str] = {}
            for k, v in _object(data, "stacks").items():
                problem = stack_name_problem(k)
                if problem is not None:
                    raise ValueError(f"stacks: {problem[0]}")
                stacks[k] = _role(v.get("role") if isinstance(v, dict) else v, f"stacks.{k}")
                if stacks[k] is None:
                    raise ValueError(f"stacks.{k} has no role")
            assignments: dict[str, Assignment] = {}
            for k, v in _object(data, "assignments").items():
                if not HOSTNAME_RE.match(k):
                    raise ValueError(f"assignments: {k!r} is not a node name")
                if not isinstance(v, dict):
                    raise ValueError(f"assignments.{k} must be an object, got {v!r:.40}")
                stack = v.get("stack")
                if stack is not None and (not isinstance(stack, str)
                                          or stack_name_problem(stack) is not None):
                    raise ValueError(f"assignments.{k}.stack: {stack!r:.60} is not a valid "
                                     "stack name")
                assignments[k] = Assignment(stack, _role(v.get("role"), f"assignments.{k}"))
            snapshots = _object(data, "snapshots")
            for k, v in snapshots.items():
                if not isinstance(v, dict):
                    raise ValueError(f"snapshots.{k} must be an object, got {v!r:.40}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(
                f"the lab state {where} is damaged: {exc}",
                f"move it away (mv {where} {where}.bad) to start from the layout's stacks "
                "(snapshot records are lost)",
            ) from None
        return cls(stacks, assignments, dict(snapshots))


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _role(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not ROLE_RE.match(value):
        raise ValueError(f"{where}.role: {value!r:.60} is not a valid role name")
    return value


class StateStore:
    def __init__(self, root: Path, lab: str) -> None:
        self.dir = root / lab
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "lock"

    def load(self) -> LabState:
        fix = (f"move it away (mv {self.path} {self.path}.bad) to start from the layout's "
               "stacks (snapshot records are lost)")
        try:
            # O_NONBLOCK: a FIFO in its place must not hang the run; only a file is read
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return LabState()
        except OSError as exc:
            raise StateFileError(f"cannot read the lab state {self.path}: "
                                 f"{exc.strerror or exc}",
                                 "fix its permissions or give another --state-dir") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateFileError(f"the lab state {self.path} is not a regular file", fix)
            if st.st_size > MAX_STATE_BYTES:
                raise StateFileError(f"the lab state {self.path} is {st.st_size} bytes, more "
                                     f"than a lab state can be ({MAX_STATE_BYTES})", fix)
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            raise StateFileError(f"cannot read the lab state {self.path}: "
                                 f"{exc.strerror or exc}", fix) from None
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise StateFileError(f"the lab state {self.path} is not UTF-8 text "
                                 f"(byte {exc.start})", fix) from None
        except json.JSONDecodeError as exc:
            raise StateFileError(
                f"the lab state {self.path} is not valid JSON (line {exc.lineno}): {exc.msg}",
                fix) from None
        except RecursionError:
            raise StateFileError(f"the lab state {self.path} is nested too deeply to be a "
                                 "lab state", fix) from None
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
