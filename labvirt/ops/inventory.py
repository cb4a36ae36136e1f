"""`labvirt inventory`: write every stack's TripleO files and the hypervisor's access files."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from labvirt.errors import InputError
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
    # Every file is made in memory first and the output directory checked for all of them:
    # a refusal (a bundle that cannot be, a path in the way) leaves nothing half-written.
    planned: list[tuple[PurePosixPath, str, str, str | None]] = []

    def put(rel: str, text: str, what: str, stack_name: str | None) -> None:
        planned.append((PurePosixPath(rel), text, what, stack_name))

    origin = f"written by labvirt for lab {lab.name}; regenerate with `labvirt inventory`"
    if not stack:  # RHOSO 18 bundle; refuses (InputError) before anything is written
        for name, text, what in edpm.bundle(lab, session.key_path(lab), origin):
            put(f"{edpm.BUNDLE_DIR}/{name}", text, what, None)
    for s in stacks:
        for name, text, what in tripleo.stack_bundle(lab, s, deployed, origin):
            put(f"{s.name}/{name}", text, what, s.name)
    if not stack:
        for name, text, what in tripleo.lab_files(lab, stacks, origin):
            put(name, text, what, None)
    key, known = session.key_path(lab), session.known_hosts_path()
    put("hypervisor-inventory.yaml",
        dump_yaml(access.hypervisor_inventory(lab, key, known), origin),
        "inventory for ansible on the hypervisor", None)
    put("ssh_config", access.ssh_config(lab, key, known), "ssh -F config", None)
    put("hosts", access.hosts_file(lab), "/etc/hosts lines", None)
    check_output_dir(out, [rel for rel, *_ in planned])
    written: list[Written] = []
    for rel, text, what, stack_name in planned:
        path = out.joinpath(*rel.parts)
        try:
            write_atomic(path, text)
        except OSError as exc:  # checked above; what remains is a full or read-only disk
            raise _refuse(path, f"could not be written: {exc.strerror or exc}",
                          "free space or fix the directory, then run labvirt inventory "
                          "again (it rewrites every file)") from None
        written.append(Written(path, what, stack_name))
    if not stack:
        written.extend(_remove_stale_stacks(out, {s.name for s in stacks}, origin))
    return written


_MOVE_AWAY = "move it away or choose another directory with --output-dir"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def _refuse(path: Path, problem: str, hint: str = _MOVE_AWAY) -> InputError:
    return InputError(f"cannot write the inventory: {path} {problem}", hint)


def _writable_dir(path: Path) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise _refuse(path, "is not writable by this user",
                      "fix its permissions or choose another directory with --output-dir")


def check_output_dir(out: Path, rels: list[PurePosixPath]) -> None:
    """Refuse, before anything is written, an output directory labvirt cannot fill wholly
    and safely: not a directory, not writable, a loop, or a path inside it that is in the
    way. Inside the directory nothing is followed: a symbolic link where labvirt writes a
    file or a directory is refused, so no write ever lands outside it."""
    try:
        st = os.stat(out)  # the directory itself may be a link the user made: followed
    except (FileNotFoundError, NotADirectoryError):
        st = None  # to be created: what is in the way is found below
    except OSError as exc:
        raise _refuse(out, f"cannot be used: {exc.strerror or exc}") from None
    if st is None:
        parent = out.parent
        while True:  # the nearest existing ancestor must be a writable directory
            try:
                pst = os.stat(parent)
            except (FileNotFoundError, NotADirectoryError):
                if parent == parent.parent:
                    raise _refuse(out, "cannot be created") from None
                parent = parent.parent
                continue
            except OSError as exc:
                raise _refuse(parent, f"cannot be used: {exc.strerror or exc}") from None
            break
        if not stat.S_ISDIR(pst.st_mode):
            raise _refuse(parent, f"is {_kind(pst.st_mode)}, not a directory")
        _writable_dir(parent)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(out, f"is {_kind(st.st_mode)}, not a directory",
                      "give --output-dir a directory (it is created when missing)")
    _writable_dir(out)
    for rel in rels:
        if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
            raise InputError(f"refusing to write {rel}: it would leave the output directory "
                             f"{out}", "this is a labvirt bug; report it")
        cur = out
        for i, part in enumerate(rel.parts):
            cur = cur / part
            try:
                mode = os.lstat(cur).st_mode
            except FileNotFoundError:
                break  # created below a directory already checked
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    break  # reported at the parent
                raise _refuse(cur, f"cannot be used: {exc.strerror or exc}") from None
            if i == len(rel.parts) - 1:
                if not stat.S_ISREG(mode):
                    raise _refuse(cur, f"is {_kind(mode)}, where labvirt writes a file")
            elif not stat.S_ISDIR(mode):
                raise _refuse(cur, f"is {_kind(mode)}, where labvirt writes a directory "
                              "(nothing inside the output directory is followed)")
            else:
                _writable_dir(cur)


def _ours(path: Path, origin: str) -> bool:
    """A regular file (not a link: O_NOFOLLOW) with a stack file's name that labvirt wrote
    for this lab."""
    if path.name not in STACK_FILES:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, len(origin.encode()) + 2)
    finally:
        os.close(fd)
    return head.decode(errors="replace").startswith(f"# {origin}")


def _collect(d: Path, origin: str, files: list[Path], dirs: list[Path]) -> bool:
    """Gather the files and directories below `d`; False when anything there is not a
    directory or a file labvirt wrote for this lab (links included: never followed)."""
    with os.scandir(d) as entries:
        for e in sorted(entries, key=lambda e: e.name):
            path = Path(e.path)
            if e.is_symlink():
                return False
            if e.is_dir(follow_symlinks=False):
                dirs.append(path)
                if not _collect(path, origin, files, dirs):
                    return False
            elif e.is_file(follow_symlinks=False) and _ours(path, origin):
                files.append(path)
            else:
                return False
    return True


def _remove_stale_stacks(out: Path, current: set[str], origin: str) -> list[Written]:
    """A stack that lost its nodes must not leave deployable files behind. Only directories
    holding nothing but files labvirt wrote for this lab are removed; a symbolic link is
    never followed, so nothing outside the output directory is touched."""
    removed = []
    with os.scandir(out) as entries:
        candidates = sorted(Path(e.path) for e in entries
                            if e.is_dir(follow_symlinks=False) and e.name not in current
                            and e.name != edpm.BUNDLE_DIR)
    for d in candidates:
        files: list[Path] = []
        dirs: list[Path] = []
        if not _collect(d, origin, files, dirs) or not files:
            continue
        for f in files:
            f.unlink()
        for sub in sorted(dirs, key=lambda p: len(p.parts), reverse=True):  # deepest first
            sub.rmdir()
        d.rmdir()
        removed.append(Written(d, "removed: the stack has no nodes now", d.name))
    return removed
