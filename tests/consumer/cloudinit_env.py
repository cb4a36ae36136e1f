"""Real cloud-init trees for the consumer tier, from Debian's own packages.

cloud-init is not on PyPI. Debian ships it as a pure-Python package, so each version is one
``apt-get download cloud-init/<suite>`` and a ``dpkg-deb -x``. apt runs with a private
sources list and private package lists under the cache (nothing of the host's apt state is
touched), so the host may be any Debian with apt and the archive keyring.

    <cache>/cloud-init/<suite>.version      -> e.g. "22.4.2-1+deb12u4"
    <cache>/cloud-init/<version>/usr/lib/python3/dist-packages/cloudinit/...

The cache is keyed by the package version; once a suite's tree is there no network is used
(set LABVIRT_CLOUDINIT_REFRESH=1 to look for newer versions). ``<cache>`` is
``$LABVIRT_CACHE`` or ``~/.cache/labvirt``. cloud-init's Python dependencies (jsonschema,
configobj, jsonpatch, oauthlib, requests, jinja2, pyyaml) come from the ``test`` extra.

Run as a script (scripts/setup.sh does) to prepare every suite:  python cloudinit_env.py
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Release:
    label: str  # test id
    suite: str
    why: str


# What labvirt's users boot: Debian 12's cloud-init is older than CentOS Stream / RHEL 9 and
# 10's 23.x-24.x, Debian 13's is 25.1 (still before `to: default` was accepted, 25.3), sid
# follows upstream.
RELEASES = (
    Release("debian12", "bookworm", "Debian 12 (22.4), the oldest in use"),
    Release("debian13", "trixie", "Debian 13 (25.1)"),
    Release("current", "sid", "Debian unstable: current upstream"),
)


class Unavailable(RuntimeError):
    """The package source cannot be reached (or apt is missing): the caller skips."""


def cache_root() -> Path:
    env = os.environ.get("LABVIRT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "labvirt"
    return base / "cloud-init"


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apt_options(apt: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", "Dir::Etc::Preferences=/nonexistent",
        "-o", "Dir::Etc::PreferencesParts=/nonexistent",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "APT::Sandbox::User=",
        "-q",
    ]


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)


def _tree(root: Path, version: str) -> Path:
    return root / version / "usr" / "lib" / "python3" / "dist-packages"


def ensure(release: Release, *, refresh: bool | None = None) -> tuple[str, Path]:
    """(package version, PYTHONPATH entry) for ``release``; downloads it when not cached."""
    root = cache_root()
    if refresh is None:
        refresh = os.environ.get("LABVIRT_CLOUDINIT_REFRESH") == "1"
    pointer = root / f"{release.suite}.version"
    with _locked(root):
        if pointer.is_file() and not refresh:
            version = pointer.read_text().strip()
            if (_tree(root, version) / "cloudinit" / "__init__.py").is_file():
                return version, _tree(root, version)
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise Unavailable(f"{tool} is not installed (a Debian host is needed)")
        if not Path(KEYRING).is_file():
            raise Unavailable(f"{KEYRING} is missing (apt-get install debian-archive-keyring)")
        apt = root / "apt" / release.suite
        for sub in ("lists/partial", "cache/archives/partial", "debs"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} {release.suite} main\n")
        opts = _apt_options(apt)
        up = _run(["apt-get", *opts, "update"])
        if up.returncode != 0 or "Err:" in up.stdout or "W: Failed" in up.stderr:
            raise Unavailable(f"apt-get update for {release.suite} failed: "
                              f"{(up.stderr or up.stdout).strip()[-400:]}")
        for old in (apt / "debs").glob("*.deb"):
            old.unlink()
        dl = _run(["apt-get", *opts, "download", f"cloud-init/{release.suite}"],
                  cwd=apt / "debs")
        debs = sorted((apt / "debs").glob("cloud-init_*.deb"))
        if dl.returncode != 0 or len(debs) != 1:
            raise Unavailable(f"apt-get download cloud-init/{release.suite} failed: "
                              f"{(dl.stderr or dl.stdout).strip()[-400:]}")
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).stdout.strip()
        if not (_tree(root, version) / "cloudinit" / "__init__.py").is_file():
            tmp = root / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            x = _run(["dpkg-deb", "-x", str(debs[0]), str(tmp)])
            if x.returncode != 0:
                raise RuntimeError(f"dpkg-deb -x {debs[0].name}: {x.stderr.strip()}")
            shutil.rmtree(root / version, ignore_errors=True)
            tmp.rename(root / version)
        pointer.write_text(version + "\n")
        # the package lists are large and only needed again on refresh
        shutil.rmtree(apt / "lists", ignore_errors=True)
        return version, _tree(root, version)


def main() -> int:
    status = 0
    for release in RELEASES:
        try:
            version, _ = ensure(release)
        except Unavailable as exc:
            print(f"cloud-init {release.suite}: unavailable: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"cloud-init {release.suite}: {version}")
    return status


if __name__ == "__main__":
    sys.exit(main())
