"""Fixtures for the libvirt test-driver tier: in-process, a fresh hypervisor per test.

A `test:///<file>` URI gives each connection fresh state, so every test gets an empty
hypervisor; the lab's state directory and pool path live in tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from labvirt.session import Session
from labvirt.virt import Hypervisor

ROOT = Path(__file__).resolve().parents[2]
DEMO = [ROOT / "overrides" / "glance-dcn.yml", ROOT / "overrides" / "tiny.yml"]


@dataclass
class TestLab:
    session: Session
    hv: Hypervisor
    layer: Path
    tmp: Path

    def relayer(self, extra: dict) -> Session:
        """Write another layer on top of the test layer; return a fresh session."""
        path = self.tmp / f"extra-{len(list(self.tmp.glob('extra-*.yml')))}.yml"
        path.write_text(yaml.safe_dump(extra))
        files = [*self.session.files, path]
        self.session = Session(files, self.session.state_root)
        return self.session


def test_layer(tmp_path: Path, uri: str, name: str = "tdlab") -> Path:
    layer = {
        "labvirt": {
            "name": name,
            "uri": uri,
            "boot": "pxe",  # the test driver cannot upload volumes: no image boot here
            "pool_path": str(tmp_path / "pool"),
            "nodes": {"undercloud": {"boot": "pxe"}},
        }
    }
    path = tmp_path / "test-layer.yml"
    path.write_text(yaml.safe_dump(layer))
    return path


@pytest.fixture
def tdlab(tmp_path: Path) -> Iterator[TestLab]:
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    uri = f"test://{node}"
    layer = test_layer(tmp_path, uri)
    session = Session([*DEMO, layer], tmp_path / "state")
    hv = Hypervisor(uri)
    try:
        yield TestLab(session, hv, layer, tmp_path)
    finally:
        hv.close()
