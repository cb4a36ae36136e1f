"""A lab on a base cloud image (here a small qcow2 made with qemu-img, as no cloud image
can be fetched on these machines) with UEFI firmware: root disks are linked clones of the
uploaded base, grown to disksize; snapshots work on UEFI nodes, which libvirt 9.0's
internal snapshots refuse."""

from __future__ import annotations

import json
import os
import random
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml
from systemlab import POOL_ROOT, URI, SystemLab, free_port_block

pytestmark = pytest.mark.system


@pytest.fixture
def uefi_lab(tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    name = f"lvtb{os.getpid() % 10000:04d}{random.randrange(16**4):04x}"
    layout = {
        "vm_prefix": name,
        "num_osds": 1,
        "uefi": True,
        "vms": [
            {"name": "undercloud", "cpu": 1, "memory": 256, "disksize": 1,
             "interfaces": [{"network": "default"}, {}]},
            {"name": "ceph-0", "cpu": 1, "memory": 256, "disksize": 2, "interfaces": [{}]},
        ],
        "labvirt": {
            "name": name, "uri": URI, "domain_type": "qemu", "image": str(base),
            "access": "forward", "forward_base_port": free_port_block(),
            "pool_path": str(POOL_ROOT / name),
            "resize": {"osd_size": "1GiB"},
            "networks": {"default": {"forward": "isolated"}},
            "stacks": [{"name": "central-ceph", "role": "CephAll", "nodes": ["oc0-ceph-0"]}],
        },
    }
    path = tmp_path / "layout.yml"
    path.write_text(yaml.safe_dump(layout))
    lab = SystemLab(name, [path], tmp_path / "state", tmp_path / "out")
    try:
        yield lab
    finally:
        lab.run("down", "--yes", check=False)


def _vol_xml(lab, volume: str) -> ET.Element:
    return ET.fromstring(lab.virsh("vol-dumpxml", "--pool", f"labvirt-{lab.name}", volume))


def test_root_disks_are_linked_clones_and_uefi_nodes_snapshot(uefi_lab):
    lab = uefi_lab
    up = json.loads(lab.run("up", "--no-wait", "--format", "json").stdout)
    assert {r["result"] for r in up["nodes"].values()} == {"created and started"}
    vols = lab.virsh("vol-list", "--pool", f"labvirt-{lab.name}").split()
    base = [v for v in vols if v.startswith("labvirt-base-") and v.endswith(".qcow2")]
    assert len(base) == 1
    root = _vol_xml(lab, f"{lab.name}-oc0-ceph-0.qcow2")
    assert root.findtext("./backingStore/path").endswith("/" + base[0])
    assert int(root.findtext("capacity")) == 2 * 1024**3  # grown to disksize
    dom = ET.fromstring(lab.virsh("dumpxml", f"{lab.name}-oc0-ceph-0"))
    assert dom.find("./os/loader").get("type") == "pflash"  # UEFI
    assert dom.find("./devices/disk[@device='cdrom']/target").get("bus") == "scsi"
    assert "nothing to do" in lab.run("up", "--no-wait").stdout  # base trusted, not re-sent

    lab.run("snapshot", "create", "clean", "--shutdown-timeout", "0", "--no-wait")
    lab.run("snapshot", "restore", "clean", "--yes", "--no-wait")
    top = ET.fromstring(lab.virsh("dumpxml", f"{lab.name}-oc0-ceph-0")).find(
        "./devices/disk[@device='disk']/source").get("volume")
    assert top == f"{lab.name}-oc0-ceph-0.s2.qcow2"
    assert _vol_xml(lab, top).findtext("./backingStore/path").endswith(
        f"/{lab.name}-oc0-ceph-0.qcow2")
    assert lab.virsh("domstate", f"{lab.name}-oc0-ceph-0").strip() == "running"


def test_a_disk_smaller_than_the_image_is_refused(uefi_lab):
    layout = yaml.safe_load(uefi_lab.files[0].read_text())
    subprocess.run(["qemu-img", "resize", "-q", layout["labvirt"]["image"], "3G"], check=True)
    proc = uefi_lab.run("up", "--no-wait", check=False)
    assert proc.returncode == 2
    assert "larger than the root disk of undercloud, oc0-ceph-0" in proc.stderr
    assert "raise disksize" in proc.stderr
