"""Overlay chains: how lab snapshots are kept as qcow2 layers (pure logic, no libvirt).

Every disk of a node is a chain of qcow2 volumes: the base volume (`lab-oc0-ceph-4.qcow2`)
and layers named `<stem>.s<N>.qcow2` on top. The domain always writes to the top layer.
Taking a snapshot freezes the top (nothing writes to it again) and puts a fresh overlay on
it; restoring puts a fresh overlay on the snapshot's frozen layer and drops the old top.
Both are O(1) whatever the amount of data, work for UEFI nodes and any disk, and need
nothing from libvirt beyond creating and deleting volumes.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from labvirt.model import Disk
from labvirt.render import NS

LAYER_RE = re.compile(r"^(?P<stem>.+)\.s(?P<n>\d+)\.qcow2$")

ET.register_namespace("qemu", "http://libvirt.org/schemas/domain/qemu/1.0")
ET.register_namespace("labvirt", NS)


def stem(volume: str) -> str:
    m = LAYER_RE.match(volume)
    if m:
        return m.group("stem")
    return volume[: -len(".qcow2")] if volume.endswith(".qcow2") else volume


def belongs_to(disk: Disk, volume: str) -> bool:
    """Is `volume` the disk's base volume or one of its layers?"""
    return volume == disk.volume or (stem(volume) == stem(disk.volume) and bool(
        LAYER_RE.match(volume)))


def next_layer(disk: Disk, existing: Iterable[str]) -> str:
    """A new layer name for the disk, numbered after every layer that exists."""
    base = stem(disk.volume)
    taken = [int(m.group("n")) for v in existing
             if (m := LAYER_RE.match(v)) and m.group("stem") == base]
    return f"{base}.s{max(taken, default=0) + 1}.qcow2"


@dataclass(frozen=True)
class VolumeNode:
    name: str
    path: str
    backing: str | None


def unneeded_layers(volumes: Iterable[VolumeNode], keep: set[str]) -> list[str]:
    """Layers to delete: not kept (in use by a domain or a snapshot record) and not the
    backing of any other volume. Base volumes are never returned. Repeats until stable,
    so a chain of orphans goes at once, top first."""
    vols = {v.name: v for v in volumes}
    doomed: list[str] = []
    while True:
        backing_paths = {v.backing for v in vols.values() if v.backing}
        batch = [v.name for v in vols.values()
                 if LAYER_RE.match(v.name) and v.name not in keep
                 and v.path not in backing_paths]
        if not batch:
            return doomed
        for name in sorted(batch):
            doomed.append(name)
            del vols[name]


def retarget_disks(domain_xml: str, volumes: dict[str, str]) -> str:
    """The domain definition with each disk (by target device) on a new volume."""
    root = ET.fromstring(domain_xml)
    for disk in root.iterfind("./devices/disk[@device='disk']"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or source is None:
            continue
        dev = target.get("dev", "")
        if dev in volumes:
            source.set("volume", volumes[dev])
            for attr in ("file", "dev"):
                source.attrib.pop(attr, None)
            # a stale <backingStore> would describe the old chain
            for bs in disk.findall("backingStore"):
                disk.remove(bs)
    return ET.tostring(root, encoding="unicode")
