"""Labs for the system tier: each gets its own name, vm_prefix, bridges, port block and
pool directory, so tests can share the host's libvirtd with anything else running there."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LABVIRT = str(ROOT / ".venv" / "bin" / "labvirt")
DEMO = [ROOT / "overrides" / "glance-dcn.yml", ROOT / "overrides" / "tiny.yml"]
URI = "qemu:///system"
POOL_ROOT = Path("/var/lib/libvirt/images/labvirt-tests")


def free_port_block(size: int = 100) -> int:
    """A block of `size` ports on 127.0.0.1 that are free right now."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(30000, 60000 - size, size)
        ok = True
        for port in range(base, base + size):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


# How long labvirt may wait for guests in a test: a limit, never what is measured. A test
# that wants a shorter wait passes its own --timeout.
READY_LIMIT = "900"
WAITING = {("up",), ("snapshot", "create"), ("snapshot", "restore")}


def with_ready_limit(args: tuple[str, ...]) -> tuple[str, ...]:
    """Commands that wait for guests get the generous READY_LIMIT unless they say."""
    waits = (args[:1] in WAITING or args[:2] in WAITING)
    if waits and "--timeout" not in args and "--no-wait" not in args \
            and "--dry-run" not in args and "--help" not in args:
        return (*args, "--timeout", READY_LIMIT)
    return args


@dataclass
class SystemLab:
    name: str
    files: list[Path]
    state_dir: Path
    out_dir: Path

    def file_args(self) -> list[str]:
        return [arg for f in self.files for arg in ("-f", str(f))]

    def run(self, *args: str, check: bool = True, timeout: float = 1800,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [LABVIRT, *self.file_args(), "--state-dir", str(self.state_dir),
               *with_ready_limit(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              input=stdin, env={**os.environ, "COLUMNS": "200"})
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = [LABVIRT, *self.file_args(), "--state-dir", str(self.state_dir),
               *with_ready_limit(args)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def virsh(self, *args: str) -> str:
        return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                              check=True).stdout


def make_lab(tmp_path: Path, extra: dict | None = None) -> SystemLab:
    name = f"lvt{os.getpid() % 10000:04d}{random.randrange(16**4):04x}"
    layer = {
        "vm_prefix": name,
        "labvirt": {
            "name": name,
            "uri": URI,
            "forward_base_port": free_port_block(),
            "pool_path": str(POOL_ROOT / name),
            **(extra or {}),
        },
    }
    path = tmp_path / "system-layer.yml"
    path.write_text(yaml.safe_dump(layer))
    return SystemLab(name, [*DEMO, path], tmp_path / "state", tmp_path / "out")


def wait_until(condition, what: str, limit: float = 900.0, every: float = 0.01,
               proc: subprocess.Popen[str] | None = None):
    """Poll `condition()` (cheap, in-process) until it returns something true; a limit,
    not a measurement: failing here means the thing never happened, not that it was slow.
    With `proc`, its exit before the condition is a failure at once, with its output."""
    import time

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what}: not seen before the command exited "
                                 f"{proc.returncode}\n{out}\n{err}")
        time.sleep(every)
    raise AssertionError(f"{what}: not seen within {limit:.0f} s")


class DomainWatch:
    """libvirt read in-process (no virsh per poll), so a test can act the moment a domain
    changes, e.g. kill -9 labvirt while its work is half done. Tests only read here."""

    def __init__(self, lab: SystemLab) -> None:
        import libvirt

        self.prefix = f"{lab.name}-"
        self.conn = libvirt.open(URI)

    def close(self) -> None:
        self.conn.close()

    def domains(self) -> list[str]:
        return sorted(d.name() for d in self.conn.listAllDomains()
                      if d.name().startswith(self.prefix))

    def domain_id(self, name: str) -> int:
        """libvirt's id of a running domain: a new one at every start, -1 when off."""
        return int(self.conn.lookupByName(name).ID())

    def disk_sources(self, name: str) -> tuple[str, ...]:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(self.conn.lookupByName(name).XMLDesc(0))
        return tuple(s.get("file", "") for s in root.findall("./devices/disk/source"))
