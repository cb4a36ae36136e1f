"""Fixtures for the system tier: a real libvirtd with QEMU (TCG) guests.

Each test lab gets its own name, vm_prefix, bridges, port block and pool directory, so it
can share the host's libvirtd with a demo lab or anything else, and is removed with
`labvirt down --yes` afterwards, whatever the test did.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemlab import URI, SystemLab, make_lab


def _libvirtd_answers() -> bool:
    return subprocess.run(["virsh", "-c", URI, "version"], capture_output=True).returncode == 0


@pytest.fixture(scope="session", autouse=True)
def libvirtd() -> None:
    """Start libvirtd when it is not running (there is no systemd on these machines)."""
    if shutil.which("virsh") is None:
        pytest.skip("libvirt is not installed: run `make test`, which installs it")
    if not _libvirtd_answers():
        if subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode:
            subprocess.run(["virtlogd", "-d"], check=True)
        if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode:
            subprocess.run(["libvirtd", "-d"], check=True)
        for _ in range(50):
            if _libvirtd_answers():
                break
            time.sleep(0.2)
    assert _libvirtd_answers(), "libvirtd did not start"


@pytest.fixture
def system_lab(tmp_path: Path) -> Iterator[SystemLab]:
    lab = make_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.run("down", "--yes", check=False)


@pytest.fixture(scope="session")
def ready_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemLab]:
    """The ten-node demo lab, up and ssh-ready, shared by the tests that only read it or
    restore it to a snapshot afterwards; removed at the end of the session."""
    lab = make_lab(tmp_path_factory.mktemp("ready-lab"))
    try:
        lab.run("up")  # waits up to systemlab.READY_LIMIT
        lab.run("inventory", "-o", str(lab.out_dir))
        yield lab
    finally:
        lab.run("down", "--yes", check=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that bring up labs of their own first, then those sharing `ready_lab`,
    so the shared ten-node lab is never running beside another lab."""
    items.sort(key=lambda item: "ready_lab" in getattr(item, "fixturenames", ()))
