"""The tiny rehearsal image: a Debian cloud kernel plus a busybox/dropbear initramfs.

It boots in seconds under TCG with 256 MiB and behaves like a pre-provisioned cloud node: it
reads a NoCloud seed (see :mod:`labvirt.seed`), creates the users, installs the ssh host keys,
configures the network, keeps ``/persist`` on the first virtio disk and runs dropbear on
port 22. It carries Debian's Python (``/usr/bin/python3``) so that Ansible modules, as EDPM's
and TripleO's playbooks send them, run on the node. ``/init`` is ``tiny-init.sh`` beside this file.

Everything comes from Debian packages fetched with ``apt-get download`` (cached in
``cache_dir/debs``); the initramfs is a cpio "newc" archive written here, with fixed
owners and mtimes, so equal packages give an equal image.

What a domain running it needs (libvirt or plain QEMU, TCG is fine):

- direct kernel boot: ``kernel``, ``initrd`` and ``cmdline`` (:data:`CMDLINE`,
  ``console=ttyS0``: init logs to the first serial port, ending with
  ``labvirt-tiny: ready <hostname>``);
- the seed ISO (volume label ``cidata``) as a CD-ROM on the IDE bus (machine ``pc``) or on a
  SCSI bus behind a ``virtio-scsi`` controller (any machine), or as a virtio disk. The cloud
  kernel has no AHCI driver: a SATA CD-ROM (q35) is not seen and the node comes up unseeded;
- disks on virtio (the first virtio disk that is not the seed is formatted ext2 when blank
  and mounted on ``/persist``); NICs are virtio-net, matched to network-config by MAC, any
  PCI address;
- optional but worth ~2 s of boot under TCG: a virtio-rng device; an ACPI power button
  (``virsh shutdown`` powers the node off cleanly).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from labvirt.errors import LabvirtError

__all__ = [
    "CMDLINE",
    "INIT_SCRIPT",
    "TinyImage",
    "TinyImageError",
    "build_tiny_image",
    "cpio_newc",
    "default_cache_dir",
    "extract_tiny_root",
    "host_busybox",
]

# Bump when the layout of the image changes in a way the inputs do not show.
FORMAT_VERSION = "labvirt-tiny-1"

# no_timer_check: under software emulation on a loaded host the kernel's IO-APIC timer check
# can fail and panic the guest ("IO-APIC + timer doesn't work"), seen with ten TCG guests on
# two busy cores; CentOS and Fedora cloud images boot with it for the same reason.
CMDLINE = "console=ttyS0 quiet no_timer_check"
INIT_SCRIPT = Path(__file__).with_name("tiny-init.sh")

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(\d[^_]*)-cloud-amd64$")
USERSPACE_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
    "libcrypt1",
    "libc6",
)
DROPBEAR_BINARIES = (
    "usr/sbin/dropbear",
    "usr/bin/dropbearconvert",
    "usr/bin/dropbearkey",
    "usr/bin/dbclient",
)
# Modules wanted; their dependencies (from .modinfo) are added and loaded first.
# virtio (disks, NICs, rng, virtio-scsi CD-ROM), the IDE CD-ROM of the "pc" machine (ata_piix),
# SCSI CD-ROM/disks, ISO 9660 for the seed, ACPI power button + evdev for a clean shutdown.
# The cloud kernel has no AHCI driver: a SATA CD-ROM (q35's default) is NOT seen.
WANTED_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_rng",  # entropy from the host: dropbear blocks until the kernel's crng is ready
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_scsi",
    "ata_piix",
    "sd_mod",
    "cdrom",
    "sr_mod",
    "isofs",
    "button",
    "evdev",
)
# Python for Ansible: EDPM's and TripleO's playbooks run modules (ping, setup, ...) on the
# nodes, so the image carries Debian's interpreter and its standard library, compiled to
# sourceless .pyc (hash-checked, so equal packages give equal bytes). Left out: OpenSSL
# (hashlib falls back to the interpreter's built-in md5/sha*), the test suites, IDLE/Tk,
# curses, readline, dbm, sqlite, NIS and the CJK codecs.
PYTHON = "python3.11"
PYTHON_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libexpat1",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
)
PYTHON_PRUNE = (
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip",
    "pydoc_data", "pydoc.py", "venv", "unittest/test", "ctypes/test", "sqlite3/test",
    "distutils/tests", "__phello__", "site-packages", "dist-packages", "sitecustomize.py",
)
PYTHON_PRUNE_RE = re.compile(
    r"^(_ssl|_hashlib|_curses|_curses_panel|_dbm|_sqlite3|nis|readline|_test\w*|xxlimited\w*"
    r"|_ctypes_test|ossaudiodev|audioop|_xxtestfuzz|_xxsubinterpreters|_codecs_(cn|hk|jp|kr|tw"
    r"|iso2022))\.cpython-"
)
# codecs kept (the rest of encodings/ is for locales a lab node never runs in)
PYTHON_ENCODINGS = frozenset({
    "__init__", "aliases", "ascii", "base64_codec", "charmap", "cp1252", "cp437", "hex_codec",
    "idna", "iso8859_1", "iso8859_15", "latin_1", "punycode", "raw_unicode_escape",
    "unicode_escape", "utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le",
    "utf_7", "utf_8", "utf_8_sig",
})
LIB_DIR = "lib/x86_64-linux-gnu"
LOADER = "lib64/ld-linux-x86-64.so.2"
CPIO_MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z, for every entry


class TinyImageError(LabvirtError):
    """Building the tiny image failed; the message says what to do (exit status 1: the
    host lacks a tool or a package, not the user's input)."""


@dataclass(frozen=True)
class TinyImage:
    kernel: Path
    initrd: Path
    cmdline: str
    version: str  # content hash of kernel+initrd, short hex


def default_cache_dir() -> Path:
    """``$LABVIRT_CACHE`` or ``~/.cache/labvirt``."""
    env = os.environ.get("LABVIRT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "labvirt"


# --------------------------------------------------------------------------------------------
# cpio newc


@dataclass
class _Entry:
    mode: int  # full st_mode (type bits included)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class _Tree:
    """The initramfs being assembled: archive path (no leading /) -> entry."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = _Entry(0o040755)
            elif existing.mode & 0o170000 != 0o040000:
                raise TinyImageError(f"initramfs: {parent} is not a directory (adding {path})")

    def dir(self, path: str, perm: int = 0o755) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(0o040000 | perm)

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(0o100000 | perm, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(0o120777, target.encode())

    def chardev(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(0o020000 | perm, rdev=(major, minor))

    def __contains__(self, path: str) -> bool:
        return path.strip("/") in self.entries


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio_newc(entries: Iterable[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """Write a cpio "newc" (070701) archive: (path, st_mode, data, (rdevmajor, rdevminor)).

    Owners are 0:0, every mtime is ``CPIO_MTIME``, inode numbers count from 1 in the
    given order: equal input gives equal bytes.
    """
    out = bytearray()

    def record(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        name_b = name.encode("utf-8") + b"\0"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (
            ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            CPIO_MTIME if name != "TRAILER!!!" else 0,
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(name_b),
            0,  # check
        )
        header = b"070701" + "".join(f"{v:08X}" for v in fields).encode("ascii")
        out.extend(header)
        out.extend(name_b)
        out.extend(_pad4(len(header) + len(name_b)))
        out.extend(data)
        out.extend(_pad4(len(data)))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        record(ino, name, mode, data, rdev)
    record(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Kernel modules


def _modinfo(data: bytes) -> dict[str, list[str]]:
    """The .modinfo section of an ELF64 little-endian kernel module, as key -> values."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise TinyImageError("not an ELF64 little-endian kernel module")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    info: dict[str, list[str]] = {}
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off : end] != b".modinfo":
            continue
        for item in data[offset : offset + size].split(b"\0"):
            if b"=" in item:
                key, _, value = item.partition(b"=")
                info.setdefault(key.decode(), []).append(value.decode(errors="replace"))
    return info


def _module_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    name = path.name
    if name.endswith(".ko"):
        return raw
    if name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    raise TinyImageError(
        f"kernel module {path} is compressed in a format this builder cannot read; "
        "only .ko, .ko.xz and .ko.gz are supported"
    )


def _module_index(moddir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(moddir.rglob("*.ko*")):
        base = path.name.split(".ko")[0].replace("-", "_")
        index.setdefault(base, path)
    return index


def _resolve_modules(moddir: Path, wanted: Iterable[str]) -> list[tuple[str, bytes]]:
    """Wanted modules and their dependencies, decompressed, in a load order that works."""
    index = _module_index(moddir)
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        name = name.replace("-", "_")
        if name in done:
            return
        if name in visiting:
            raise TinyImageError(f"kernel module dependency cycle at {name}")
        path = index.get(name)
        if path is None:
            builtin = moddir / "modules.builtin"
            why = f" (needed by {needed_by})" if needed_by else ""
            if builtin.exists() and re.search(
                rf"/{re.escape(name)}\.ko$", builtin.read_text(), re.MULTILINE
            ):
                done.add(name)
                return
            raise TinyImageError(
                f"kernel module {name}{why} not found under {moddir}; "
                "the kernel package may have changed: check WANTED_MODULES in "
                "labvirt/image/tiny.py"
            )
        visiting.add(name)
        data = _module_bytes(path)
        for dep_list in _modinfo(data).get("depends", []):
            for dep in filter(None, dep_list.split(",")):
                visit(dep, name)
        visiting.discard(name)
        done.add(name)
        order.append((name, data))

    for name in wanted:
        visit(name, None)
    return order


# --------------------------------------------------------------------------------------------
# Debian packages


def _run(
    cmd: list[str], what: str, fix: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise TinyImageError(f"{what} failed: {exc}; {fix}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise TinyImageError(f"{what} failed: {' / '.join(detail)}; {fix}")
    return proc.stdout


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text)]


def _cached_debs(debs: Path, package: str) -> list[Path]:
    return sorted(debs.glob(f"{package}_*.deb"), key=lambda p: _natural_key(p.name))


def _kernel_package(debs: Path) -> str:
    cached = [
        p
        for p in debs.glob("linux-image-*-cloud-amd64_*.deb")
        if KERNEL_PACKAGE_RE.match(p.name.split("_")[0])
    ]
    if cached:
        return max(cached, key=lambda p: _natural_key(p.name)).name.split("_")[0]
    out = _run(
        ["apt-cache", "depends", KERNEL_METAPACKAGE],
        f"apt-cache depends {KERNEL_METAPACKAGE}",
        "run apt-get update (the tiny image needs Debian's package lists)",
    )
    for line in out.splitlines():
        match = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if match and KERNEL_PACKAGE_RE.match(match.group(1)):
            return match.group(1)
    raise TinyImageError(
        f"apt-cache depends {KERNEL_METAPACKAGE} names no linux-image-*-cloud-amd64 package; "
        "run apt-get update"
    )


def _download(debs: Path, packages: list[str], progress: Callable[[str], None]) -> None:
    """``apt-get download`` the packages (one call for all) into ``debs``."""
    progress(f"downloading {' '.join(packages)}")
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        _run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *packages],
            f"apt-get download {' '.join(packages)}",
            "run apt-get update, check that Debian's package registry is reachable",
            cwd=Path(tmp),
        )
        for deb in Path(tmp).glob("*.deb"):
            deb.replace(debs / deb.name)


def _ensure_debs(
    debs: Path, progress: Callable[[str], None], packages: list[str] | None = None
) -> list[Path]:
    """``debs/<package>_*.deb`` for each package (default: all of the image's), downloading
    only those not already there."""
    debs.mkdir(parents=True, exist_ok=True)
    if packages is None:
        packages = [_kernel_package(debs), *USERSPACE_PACKAGES, *PYTHON_PACKAGES]
    missing = [p for p in packages if not _cached_debs(debs, p)]
    if missing:
        _download(debs, missing, progress)
    paths: list[Path] = []
    for package in packages:
        found = _cached_debs(debs, package)
        if not found:
            raise TinyImageError(
                f"apt-get download {package} left no {package}_*.deb in {debs}; run apt-get update"
            )
        paths.append(found[-1])
    return paths


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _input_key(debs: list[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(FORMAT_VERSION.encode())
    digest.update(hashlib.sha256(INIT_SCRIPT.read_bytes()).digest())
    digest.update(hashlib.sha256(Path(__file__).read_bytes()).digest())
    for deb in debs:
        digest.update(f"{deb.name}\0{_sha256_file(deb)}\0".encode())
    return digest.hexdigest()


def extract_tiny_root(debs: list[Path], dest: Path) -> Path:
    """Extract the image's Debian packages into ``dest`` (with ``dpkg-deb -x``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(
            ["dpkg-deb", "-x", str(deb), str(dest)],
            f"dpkg-deb -x {deb.name}",
            f"delete {deb} so it is downloaded again; dpkg-deb must be installed",
        )
    return dest


# --------------------------------------------------------------------------------------------
# Assembling the initramfs


def _ldd_sonames(binary: Path, lib_dirs: list[Path]) -> list[str]:
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(str(d) for d in lib_dirs))
    out = _run(
        ["ldd", str(binary)],
        f"ldd {binary.name}",
        "the host needs ldd (libc-bin) and must be able to run x86-64 binaries",
        env=env,
    )
    names: list[str] = []
    for line in out.splitlines():
        line = line.strip()
        if "not found" in line:
            raise TinyImageError(
                f"ldd {binary.name}: {line}; a library package is missing from "
                "USERSPACE_PACKAGES in labvirt/image/tiny.py"
            )
        soname = line.split()[0] if line else ""
        if soname.startswith("linux-vdso") or not soname or soname == "statically":
            continue
        names.append(soname)
    return names


def _find_lib(soname: str, lib_dirs: list[Path]) -> Path:
    base = os.path.basename(soname)
    for directory in lib_dirs:
        candidate = directory / base
        if candidate.exists():
            return candidate.resolve()
    for host_dir in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"):
        candidate = Path(host_dir) / base
        if candidate.exists():
            return candidate.resolve()
    raise TinyImageError(f"library {soname} not found in the extracted packages nor on the host")


def _busybox_applets(busybox: Path) -> list[str]:
    out = _run(
        [str(busybox), "--list-full"],
        "busybox --list-full",
        "the host must be able to run x86-64 binaries",
    )
    return [line.strip().strip("/") for line in out.splitlines() if line.strip()]


_ETC_FILES: dict[str, tuple[str, int]] = {
    "etc/passwd": ("root:*:0:0:root:/root:/bin/sh\n", 0o644),
    "etc/group": ("root:x:0:\ntty:x:5:\n", 0o644),
    "etc/shells": ("/bin/sh\n/bin/ash\n/bin/bash\n", 0o644),
    "etc/nsswitch.conf": ("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", 0o644),
    "etc/hostname": ("tiny\n", 0o644),
    "etc/profile": (
        'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nPS1="$(id -un)@$(hostname):\\w\\$ "\n',
        0o644,
    ),
    "etc/os-release": (
        'NAME="labvirt-tiny"\nID=labvirt-tiny\nPRETTY_NAME="labvirt tiny image"\n',
        0o644,
    ),
    # busybox acpid runs this on the ACPI power button (virsh shutdown): poweroff via init.
    "etc/acpi/PWRF/00000080": ("#!/bin/sh\nkill -USR2 1\n", 0o755),
}


def _assemble(root: Path, kver: str, progress: Callable[[str], None]) -> _Tree:
    tree = _Tree()
    for d in (
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "persist",
        "home",
        "mnt",
        "root",
        "var/log",
        "etc/dropbear",
        "usr/share",
        "sbin",
        "usr/bin",
        "usr/sbin",
    ):
        tree.dir(d, 0o1777 if d == "tmp" else 0o700 if d in ("root", "etc/dropbear") else 0o755)
    tree.chardev("dev/console", 5, 1, 0o600)
    tree.chardev("dev/null", 1, 3, 0o666)

    busybox = root / "bin" / "busybox"
    if not busybox.exists():
        raise TinyImageError(f"{busybox} missing after extracting busybox-static")
    tree.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _busybox_applets(busybox):
        if applet in ("bin/busybox", "linuxrc", "init"):
            continue
        tree.symlink(applet, "/bin/busybox")

    lib_dirs = [root / LIB_DIR, root / "usr" / LIB_DIR]
    sonames: list[str] = []
    for rel in DROPBEAR_BINARIES:
        binary = root / rel
        if not binary.exists():
            raise TinyImageError(f"{binary} missing after extracting dropbear-bin")
        tree.file(rel, binary.read_bytes(), 0o755)
        for soname in _ldd_sonames(binary, lib_dirs):
            if soname not in sonames:
                sonames.append(soname)
    for soname in sonames:
        source = _find_lib(soname, lib_dirs)
        if os.path.basename(soname).startswith("ld-linux"):
            tree.file(LOADER, source.read_bytes(), 0o755)
            tree.symlink(f"{LIB_DIR}/{os.path.basename(soname)}", f"/{LOADER}")
        else:
            tree.file(f"{LIB_DIR}/{os.path.basename(soname)}", source.read_bytes(), 0o644)
    if LOADER not in tree:
        raise TinyImageError("ldd named no ELF loader (ld-linux-x86-64.so.2) for dropbear")

    _add_python(tree, root, lib_dirs, progress)

    moddir = root / "lib" / "modules" / kver
    modules = _resolve_modules(moddir, WANTED_MODULES)
    for name, data in modules:
        tree.file(f"lib/modules/{name}.ko", data, 0o644)
    tree.file("lib/modules/load-order", "".join(f"{n}\n" for n, _ in modules).encode())
    progress(f"{len(modules)} kernel modules: {' '.join(n for n, _ in modules)}")

    for path, (text, perm) in _ETC_FILES.items():
        tree.file(path, text.encode(), perm)
    tree.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    return tree


def _add_python(
    tree: _Tree, root: Path, lib_dirs: list[Path], progress: Callable[[str], None]
) -> None:
    """Debian's Python with a pruned, precompiled standard library (see PYTHON_PACKAGES)."""
    binary = root / "usr" / "bin" / PYTHON
    stdlib = root / "usr" / "lib" / PYTHON
    if not binary.exists() or not (stdlib / "os.py").exists():
        raise TinyImageError(
            f"{binary.relative_to(root)} or its standard library missing after extracting "
            f"{' '.join(PYTHON_PACKAGES)}; Debian's Python may have moved on: check PYTHON "
            "in labvirt/image/tiny.py"
        )
    for rel in PYTHON_PRUNE:
        target = stdlib / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for codec in sorted((stdlib / "encodings").glob("*.py")):
        if codec.stem not in PYTHON_ENCODINGS:
            codec.unlink()
    dynload = stdlib / "lib-dynload"
    for ext in sorted(dynload.iterdir()):
        if PYTHON_PRUNE_RE.match(ext.name):
            ext.unlink()
    env = dict(
        os.environ,
        PYTHONHOME=str(root / "usr"),
        LD_LIBRARY_PATH=":".join(str(d) for d in lib_dirs),
        SOURCE_DATE_EPOCH=str(CPIO_MTIME),
    )
    _run(
        [str(binary), "-I", "-m", "compileall", "-q", "-b", "-j", "0",
         "--invalidation-mode", "unchecked-hash", "-d", f"/usr/lib/{PYTHON}", str(stdlib)],
        f"compiling {PYTHON}'s standard library",
        "the host must be able to run x86-64 binaries",
        env=env,
    )
    sonames: list[str] = []
    for elf in [binary, *sorted(dynload.glob("*.so"))]:
        for soname in _ldd_sonames(elf, lib_dirs):
            if soname not in sonames:
                sonames.append(soname)
    for soname in sonames:
        base = os.path.basename(soname)
        if not base.startswith("ld-linux") and f"{LIB_DIR}/{base}" not in tree:
            tree.file(f"{LIB_DIR}/{base}", _find_lib(soname, lib_dirs).read_bytes(), 0o644)
    tree.file(f"usr/bin/{PYTHON}", binary.read_bytes(), 0o755)
    tree.symlink("usr/bin/python3", PYTHON)
    count = 0
    for path in sorted(stdlib.rglob("*")):
        rel = f"usr/lib/{PYTHON}/{path.relative_to(stdlib).as_posix()}"
        if "__pycache__" in path.parts or path.suffix == ".py":
            continue
        if path.is_symlink():
            continue  # Debian links a few files into /etc; nothing here needs them
        if path.is_dir():
            tree.dir(rel)
        else:
            tree.file(rel, path.read_bytes(), 0o755 if path.suffix == ".so" else 0o644)
            count += 1
    progress(f"{PYTHON}: {count} standard library files")


def _initrd_bytes(tree: _Tree) -> bytes:
    def ordered() -> Iterator[tuple[str, int, bytes, tuple[int, int]]]:
        for path in sorted(tree.entries, key=lambda p: p.split("/")):
            entry = tree.entries[path]
            yield path, entry.mode, entry.data, entry.rdev

    archive = cpio_newc(ordered())
    return gzip.compress(archive, compresslevel=6, mtime=0)


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".tiny.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def host_busybox(cache_dir: Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """The image's busybox-static binary, extracted under ``cache_dir`` to run on the host.

    Tests use it to run tiny-init.sh's parser with exactly the busybox the image has.
    """
    say = progress or (lambda _msg: None)
    cache_dir = Path(cache_dir).expanduser()
    with _locked(cache_dir):
        (deb,) = _ensure_debs(cache_dir / "debs", say, ["busybox-static"])
        dest = cache_dir / "host-busybox" / deb.name.removesuffix(".deb")
        binary = dest / "bin" / "busybox"
        if not binary.exists():
            with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".busybox-") as tmp:
                extract_tiny_root([deb], Path(tmp) / "root")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)
                (Path(tmp) / "root").replace(dest)
        if not binary.exists():
            raise TinyImageError(f"{deb.name} has no bin/busybox; delete it and retry")
        return binary


def build_tiny_image(
    cache_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> TinyImage:
    """Build (or find in ``cache_dir``) the tiny image; see the module docstring."""
    say = progress or (lambda _msg: None)
    cache_dir = Path(cache_dir).expanduser()
    if not INIT_SCRIPT.exists():
        raise TinyImageError(f"{INIT_SCRIPT} is missing: the labvirt installation is incomplete")
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "ldd"):
        if shutil.which(tool) is None:
            raise TinyImageError(
                f"{tool} not found: the tiny image is built from Debian packages and needs "
                "apt, dpkg and libc-bin (run it on Debian or Ubuntu)"
            )

    with _locked(cache_dir):
        debs = _ensure_debs(cache_dir / "debs", say)
        key = _input_key(debs)
        stamp = cache_dir / f"tiny-inputs-{key[:16]}.json"
        if not force and stamp.exists():
            try:
                version = json.loads(stamp.read_text())["version"]
            except (ValueError, KeyError, TypeError):
                version = None
            if version:
                out = cache_dir / f"tiny-{version}"
                kernel, initrd = out / "vmlinuz", out / "initrd.img"
                if kernel.exists() and initrd.exists():
                    return TinyImage(kernel, initrd, CMDLINE, version)  # cached: say nothing

        kernel_pkg = debs[0].name.split("_")[0]
        match = KERNEL_PACKAGE_RE.match(kernel_pkg)
        if match is None:  # pragma: no cover - _kernel_package guarantees the pattern
            raise TinyImageError(f"unexpected kernel package name {kernel_pkg}")
        kver = f"{match.group(1)}-cloud-amd64"
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
            say("extracting packages")
            root = extract_tiny_root(debs, Path(tmp) / "root")
            vmlinuz = root / "boot" / f"vmlinuz-{kver}"
            if not vmlinuz.exists():
                raise TinyImageError(f"{vmlinuz.name} missing from {debs[0].name}")
            say("assembling the initramfs")
            tree = _assemble(root, kver, say)
            initrd_data = _initrd_bytes(tree)
            kernel_data = vmlinuz.read_bytes()

        digest = hashlib.sha256()
        digest.update(hashlib.sha256(kernel_data).digest())
        digest.update(hashlib.sha256(initrd_data).digest())
        version = digest.hexdigest()[:12]
        out = cache_dir / f"tiny-{version}"
        out.mkdir(exist_ok=True)
        _write_atomic(out / "vmlinuz", kernel_data)
        _write_atomic(out / "initrd.img", initrd_data)
        _write_atomic(
            stamp,
            json.dumps(
                {"version": version, "kernel": kver, "debs": [d.name for d in debs]}, indent=1
            ).encode(),
        )
        say(f"tiny image {version}: initrd {len(initrd_data) // 1024} KiB in {out}")
        return TinyImage(out / "vmlinuz", out / "initrd.img", CMDLINE, version)
