"""A throwaway copy of the demo lab for benchmarks: own name, prefix, bridges, ports and
pool, removed at the end. Runs the real CLI and reads its `--format json` output."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LABVIRT = str(ROOT / ".venv" / "bin" / "labvirt")
DEMO = [ROOT / "overrides" / "glance-dcn.yml", ROOT / "overrides" / "tiny.yml"]


def _free_ports(size: int = 100) -> int:
    for base in range(41000, 60000, size):
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


class BenchLab:
    def __init__(self, tmp: Path, extra: dict[str, Any] | None = None) -> None:
        self.name = f"bench{os.getpid() % 100000}"
        layer = {"vm_prefix": self.name, "labvirt": {
            "name": self.name, "forward_base_port": _free_ports(),
            "pool_path": f"/var/lib/libvirt/images/labvirt-bench/{self.name}",
            **(extra or {})}}
        path = tmp / "bench-layer.yml"
        path.write_text(yaml.safe_dump(layer))
        self.files = [*DEMO, path]
        self.state = tmp / "state"

    def run(self, *args: str, check: bool = True) -> tuple[float, str]:
        cmd = [LABVIRT, *[a for f in self.files for a in ("-f", str(f))],
               "--state-dir", str(self.state), *args]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
        return elapsed, proc.stdout

    def json(self, *args: str) -> tuple[float, Any]:
        elapsed, out = self.run(*args, "--format", "json")
        return elapsed, json.loads(out)


@contextmanager
def bench_lab(extra: dict[str, Any] | None = None) -> Iterator[BenchLab]:
    with tempfile.TemporaryDirectory(prefix="labvirt-bench-") as tmp:
        lab = BenchLab(Path(tmp), extra)
        try:
            yield lab
        finally:
            lab.run("down", "--yes", check=False)


def summary(values: list[float]) -> str:
    return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s (n={len(values)})")
