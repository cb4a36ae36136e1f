"""Overlay-chain logic (labvirt.layers): layer names, which volumes belong to a disk, which
layers may go, and how a domain definition is moved onto new layers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from labvirt.layers import (
    VolumeNode,
    belongs_to,
    next_layer,
    retarget_disks,
    stem,
    unneeded_layers,
)
from labvirt.model import Disk
from labvirt.render import NS

pytestmark = pytest.mark.unit

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
POOL = "/pool"

ROOT = Disk("root", "lab-oc0-ceph-4.qcow2", 1024, "vda")
OSD1 = Disk("osd-1", "lab-oc0-ceph-4-osd-1.qcow2", 1024, "vdc")
OSD10 = Disk("osd-10", "lab-oc0-ceph-4-osd-10.qcow2", 1024, "vdl")


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("volume", "expected"), [
    ("lab-oc0-ceph-4.qcow2", "lab-oc0-ceph-4"),
    ("lab-oc0-ceph-4.s1.qcow2", "lab-oc0-ceph-4"),
    ("lab-oc0-ceph-4.s12.qcow2", "lab-oc0-ceph-4"),
    ("lab-oc0-ceph-4-osd-1.s3.qcow2", "lab-oc0-ceph-4-osd-1"),
    ("lab-oc0-ceph-4-osd-10.qcow2", "lab-oc0-ceph-4-osd-10"),
    ("lab-oc0-ceph-4-seed.iso", "lab-oc0-ceph-4-seed.iso"),  # not a qcow2: unchanged
    ("lab-oc0-ceph-4.sx.qcow2", "lab-oc0-ceph-4.sx"),  # not a layer number
])
def test_stem(volume, expected):
    assert stem(volume) == expected


def test_first_layer_is_s1():
    assert next_layer(ROOT, []) == "lab-oc0-ceph-4.s1.qcow2"
    assert next_layer(ROOT, ["lab-oc0-ceph-4.qcow2"]) == "lab-oc0-ceph-4.s1.qcow2"


def test_next_layer_numbers_after_the_highest_layer_of_the_same_disk():
    existing = ["lab-oc0-ceph-4.qcow2", "lab-oc0-ceph-4.s1.qcow2", "lab-oc0-ceph-4.s4.qcow2",
                "lab-oc0-ceph-4.s2.qcow2"]
    assert next_layer(ROOT, existing) == "lab-oc0-ceph-4.s5.qcow2"
    # numbers compare as numbers, not strings (s10 > s9)
    assert next_layer(ROOT, ["lab-oc0-ceph-4.s9.qcow2", "lab-oc0-ceph-4.s10.qcow2"]) == (
        "lab-oc0-ceph-4.s11.qcow2")


def test_next_layer_ignores_other_disks_layers():
    existing = [
        "lab-oc0-ceph-4-osd-1.s7.qcow2",   # another disk of the same node
        "lab-oc0-ceph-4-osd-10.s9.qcow2",  # a disk whose name extends osd-1
        "lab-oc0-ceph-40.s5.qcow2",        # another node whose name extends ceph-4
        "lab-oc0-ceph-4.s2.qcow2",
    ]
    assert next_layer(ROOT, existing) == "lab-oc0-ceph-4.s3.qcow2"
    assert next_layer(OSD1, existing) == "lab-oc0-ceph-4-osd-1.s8.qcow2"
    assert next_layer(OSD10, existing) == "lab-oc0-ceph-4-osd-10.s10.qcow2"
    assert next_layer(OSD1, ["lab-oc0-ceph-4-osd-10.s9.qcow2"]) == (
        "lab-oc0-ceph-4-osd-1.s1.qcow2")


def test_belongs_to():
    assert belongs_to(ROOT, "lab-oc0-ceph-4.qcow2")
    assert belongs_to(ROOT, "lab-oc0-ceph-4.s1.qcow2")
    assert belongs_to(ROOT, "lab-oc0-ceph-4.s23.qcow2")
    assert belongs_to(OSD1, "lab-oc0-ceph-4-osd-1.s2.qcow2")
    # other disks of the node, other nodes, and non-layer files of the node
    assert not belongs_to(ROOT, "lab-oc0-ceph-4-osd-1.qcow2")
    assert not belongs_to(ROOT, "lab-oc0-ceph-4-osd-1.s1.qcow2")
    assert not belongs_to(ROOT, "lab-oc0-ceph-40.s1.qcow2")
    assert not belongs_to(ROOT, "lab-oc0-ceph-40.qcow2")
    assert not belongs_to(ROOT, "lab-oc0-ceph-4-seed.iso")
    assert not belongs_to(ROOT, "lab-oc0-ceph-4.console.log")
    assert not belongs_to(OSD1, "lab-oc0-ceph-4-osd-10.s1.qcow2")
    assert not belongs_to(OSD10, "lab-oc0-ceph-4-osd-1.qcow2")


# --- which layers may go -------------------------------------------------------------------


def vol(name: str, backing: str | None = None) -> VolumeNode:
    return VolumeNode(name, f"{POOL}/{name}", f"{POOL}/{backing}" if backing else None)


BASE = "lab-oc0-ceph-4.qcow2"
S1 = "lab-oc0-ceph-4.s1.qcow2"
S2 = "lab-oc0-ceph-4.s2.qcow2"
S3 = "lab-oc0-ceph-4.s3.qcow2"
S4 = "lab-oc0-ceph-4.s4.qcow2"


def test_an_orphan_top_goes():
    # the domain writes to s2; s3 on s1 was left by an interrupted run
    vols = [vol(BASE), vol(S1, BASE), vol(S2, S1), vol(S3, S1)]
    assert unneeded_layers(vols, {S2}) == [S3]


def test_a_frozen_layer_with_a_child_stays_even_when_no_one_names_it():
    vols = [vol(BASE), vol(S1, BASE), vol(S2, S1)]
    assert unneeded_layers(vols, {S2}) == []


def test_a_chain_of_orphans_goes_in_one_call_top_first():
    # current top s4 sits on the base; s1 <- s2 <- s3 are an abandoned chain
    vols = [vol(BASE), vol(S1, BASE), vol(S2, S1), vol(S3, S2), vol(S4, BASE)]
    assert unneeded_layers(vols, {S4}) == [S3, S2, S1]


def test_a_kept_layer_stays_and_holds_its_chain():
    vols = [vol(BASE), vol(S1, BASE), vol(S2, S1), vol(S3, S2), vol(S4, BASE)]
    # a snapshot record names s2: s3 above it goes, s2 and its backing s1 stay
    assert unneeded_layers(vols, {S4, S2}) == [S3]
    # kept names stay even without children and without a domain
    assert unneeded_layers(vols, {S4, S3}) == []


def test_base_volumes_never_go():
    # nothing is kept, nothing backs on anything: only layers are returned, all of them
    other = "lab-oc0-ceph-4-osd-0.qcow2"
    vols = [vol(BASE), vol(other), vol(S1, BASE), vol("lab-oc0-ceph-4-osd-0.s1.qcow2", other)]
    doomed = unneeded_layers(vols, set())
    assert sorted(doomed) == sorted([S1, "lab-oc0-ceph-4-osd-0.s1.qcow2"])
    assert BASE not in doomed and other not in doomed
    assert unneeded_layers([vol(BASE), vol(other)], set()) == []


def test_several_disks_are_handled_independently():
    o_base, o1, o2 = ("lab-oc0-ceph-4-osd-0.qcow2", "lab-oc0-ceph-4-osd-0.s1.qcow2",
                      "lab-oc0-ceph-4-osd-0.s2.qcow2")
    vols = [vol(BASE), vol(S1, BASE), vol(S2, BASE),
            vol(o_base), vol(o1, o_base), vol(o2, o1)]
    assert unneeded_layers(vols, {S2, o2}) == [S1]


# --- moving a domain onto new layers -------------------------------------------------------


DOMAIN = f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>lab-oc0-ceph-4</name>
  <metadata>
    <labvirt:node xmlns:labvirt='{NS}' lab='tdlab' node='oc0-ceph-4' stack='dcn0'
      role='DistributedComputeHCI' hash='2bec9284123e472e'/>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='labvirt-tdlab' volume='lab-oc0-ceph-4.s1.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/pool/lab-oc0-ceph-4.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='labvirt-tdlab' volume='lab-oc0-ceph-4-osd-0.qcow2'/>
      <target dev='vdb' bus='virtio'/>
      <iotune><total_iops_sec>500</total_iops_sec></iotune>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='labvirt-tdlab' volume='lab-oc0-ceph-4-osd-1.s1.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/pool/lab-oc0-ceph-4-osd-1.qcow2'/>
      </backingStore>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='volume' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source pool='labvirt-tdlab' volume='lab-oc0-ceph-4-seed.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=labvirtmgmt,restrict=on,hostfwd=tcp:127.0.0.1:2237-:22'/>
  </qemu:commandline>
</domain>"""


def _shape(el: ET.Element) -> tuple:
    """An element as comparable data: tag (with namespace URI), attributes, text, children."""
    return (el.tag, dict(el.attrib), (el.text or "").strip(), [_shape(c) for c in el])


def _disks(root: ET.Element) -> dict[str, ET.Element]:
    return {d.find("target").get("dev"): d for d in root.iterfind("./devices/disk")}


def test_retarget_changes_only_the_named_targets():
    before = ET.fromstring(DOMAIN)
    after = ET.fromstring(retarget_disks(DOMAIN, {"vda": "lab-oc0-ceph-4.s2.qcow2",
                                                  "vdc": "lab-oc0-ceph-4-osd-1.s2.qcow2"}))
    old, new = _disks(before), _disks(after)
    assert list(new) == ["vda", "vdb", "vdc", "sda"]  # order kept
    assert new["vda"].find("source").attrib == {"pool": "labvirt-tdlab",
                                                "volume": "lab-oc0-ceph-4.s2.qcow2"}
    assert new["vdc"].find("source").get("volume") == "lab-oc0-ceph-4-osd-1.s2.qcow2"
    # untouched disks are identical, including the cdrom
    assert _shape(new["vdb"]) == _shape(old["vdb"])
    assert _shape(new["sda"]) == _shape(old["sda"])
    # the retargeted disks keep everything but the source volume and the stale chain
    for dev in ("vda", "vdc"):
        assert [c.tag for c in new[dev]] == [c.tag for c in old[dev] if c.tag != "backingStore"]
        assert _shape(new[dev].find("driver")) == _shape(old[dev].find("driver"))
        assert new[dev].attrib == old[dev].attrib
    # everything outside <devices> is unchanged
    for a, b in zip(before, after, strict=True):
        if a.tag != "devices":
            assert _shape(a) == _shape(b)


def test_retarget_drops_the_stale_backing_chain():
    out = ET.fromstring(retarget_disks(DOMAIN, {"vda": "lab-oc0-ceph-4.s2.qcow2"}))
    disks = _disks(out)
    assert disks["vda"].find("backingStore") is None
    # a disk not retargeted keeps its own description
    assert disks["vdc"].find("backingStore") is not None


def test_retarget_keeps_the_qemu_and_labvirt_namespaces():
    text = retarget_disks(DOMAIN, {"vda": "lab-oc0-ceph-4.s2.qcow2"})
    out = ET.fromstring(text)
    before = ET.fromstring(DOMAIN)
    cmd = out.find(f"{{{QEMU_NS}}}commandline")
    assert cmd is not None
    assert _shape(cmd) == _shape(before.find(f"{{{QEMU_NS}}}commandline"))
    assert [a.get("value") for a in cmd.iterfind(f"{{{QEMU_NS}}}arg")] == [
        "-netdev", "user,id=labvirtmgmt,restrict=on,hostfwd=tcp:127.0.0.1:2237-:22"]
    meta = out.find(f"./metadata/{{{NS}}}node")
    assert meta is not None
    assert meta.attrib == before.find(f"./metadata/{{{NS}}}node").attrib
    # libvirt looks for these prefixes; no ns0: invented by the serializer
    assert "qemu:commandline" in text and "labvirt:node" in text and "ns0:" not in text


def test_retarget_replaces_a_file_source_by_the_volume():
    xml = """<domain type='qemu'><name>x</name><devices>
      <disk type='volume' device='disk'>
        <source pool='p' volume='old.qcow2' file='/pool/old.qcow2'/>
        <target dev='vda'/>
      </disk></devices></domain>"""
    out = ET.fromstring(retarget_disks(xml, {"vda": "new.qcow2"}))
    assert out.find("./devices/disk/source").attrib == {"pool": "p", "volume": "new.qcow2"}


def test_retarget_with_nothing_to_change_keeps_every_element():
    assert _shape(ET.fromstring(retarget_disks(DOMAIN, {}))) == _shape(ET.fromstring(DOMAIN))
    # a target the domain does not have changes nothing either
    assert _shape(ET.fromstring(retarget_disks(DOMAIN, {"vdz": "x.qcow2"}))) == _shape(
        ET.fromstring(DOMAIN))
