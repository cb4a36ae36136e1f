"""Rendered libvirt XML against golden files and against libvirt's own schema.

Regenerate after an intended change with `make golden` (LABVIRT_REGEN_GOLDEN=1) and review
`git diff tests/golden/xml` before committing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labvirt.model import Lab
from labvirt.render import (
    BootFiles,
    VolumeView,
    domain_view,
    network_view,
    render_domain_xml,
    render_network_xml,
    render_pool_xml,
    render_volume_xml,
)
from labvirt.session import Session

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "xml"
DEFAULT = [ROOT / "overrides" / "glance-dcn.yml"]
DEMO = [*DEFAULT, ROOT / "overrides" / "tiny.yml"]
TINY_BOOT = BootFiles("/pool/labvirt-tiny-0-vmlinuz", "/pool/labvirt-tiny-0-initrd.img",
                      "console=ttyS0")


def _lab(files: list[Path]) -> Lab:
    return Session(files, Path("/nonexistent/labvirt-state")).lab()


def _cases() -> dict[str, str]:
    demo, default = _lab(DEMO), _lab(DEFAULT)
    cases = {
        "demo-oc0-ceph-4.xml": render_domain_xml(domain_view(
            demo, demo.node("oc0-ceph-4"), domain_type="qemu", boot=TINY_BOOT, seed=True)),
        "demo-undercloud.xml": render_domain_xml(domain_view(
            demo, demo.node("undercloud"), domain_type="qemu", boot=TINY_BOOT, seed=True)),
        "default-oc0-controller-0-uefi-kvm.xml": render_domain_xml(domain_view(
            default, default.node("oc0-controller-0"), domain_type="kvm", seed=True)),
        "default-pool.xml": render_pool_xml(default),
        "volume-overlay.xml": render_volume_xml(
            VolumeView("lab-oc0-ceph-4.qcow2", 100 * 1024**3, "qcow2", "/pool/base.qcow2")),
    }
    for lab, tag in ((demo, "demo"), (default, "default")):
        for net in lab.networks:
            cases[f"{tag}-network-{net.name}.xml"] = render_network_xml(network_view(lab, net))
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_xml(name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("LABVIRT_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CASES[name])
    assert path.exists(), f"missing golden file {path}: run `make golden`"
    assert CASES[name] == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None,
                    reason="virt-xml-validate (libvirt-clients) is not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_xml_is_valid_for_libvirt(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(CASES[name])
    kind = "storagevol" if name.startswith("volume") else None
    args = ["virt-xml-validate", str(path)] + ([kind] if kind else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_rendering_escapes_values() -> None:
    """Autoescaping: a value with XML metacharacters cannot add elements."""
    view = VolumeView("a'/><evil x='", 1, "qcow2")
    xml = render_volume_xml(view)
    assert "<evil" not in xml
    assert "&#39;/&gt;&lt;evil" in xml or "&apos;" in xml
