"""The lab model: names, sizes, disks, NICs, MACs, addresses and ports, all deterministic."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest
from clitools import DEMO, REPO, labvirt

from labvirt.layout.loader import load_layers
from labvirt.layout.spec import GIB, MIB, read_layout
from labvirt.model import Lab, build_lab, default_port_base
from labvirt.outputs.views import lab_to_dict

pytestmark = pytest.mark.unit

GLANCE = REPO / "overrides" / "glance-dcn.yml"
TINY = REPO / "overrides" / "tiny.yml"


def lab_of(*paths: Path) -> Lab:
    return build_lab(read_layout(load_layers(list(paths))))


def lab_from(tmp_path: Path, text: str) -> Lab:
    path = tmp_path / "layout.yml"
    path.write_text(textwrap.dedent(text))
    return lab_of(path)


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def test_memory_is_libvirt_megabytes() -> None:
    lab = lab_of(GLANCE)
    assert lab.node("undercloud").memory_kib == 16_000_000  # 16384 * 10^6 bytes
    assert lab.node("oc0-ceph-0").memory_kib == 6144 * 1000**2 // 1024
    assert lab.node("oc0-controller-0").memory_mib == 3906


def test_overclouds_make_copies_with_tripleo_lab_names(tmp_path: Path) -> None:
    lab = lab_from(tmp_path, """\
        overclouds: 2
        vm_prefix: dcn
        vms:
          - {name: undercloud}
          - {name: controller-0}
          - {name: ceph-0}
        """)
    assert [(n.hostname, n.domain, n.overcloud) for n in lab.nodes] == [
        ("undercloud", "dcn-undercloud", None),
        ("oc0-controller-0", "dcn-oc0-controller-0", 0),
        ("oc0-ceph-0", "dcn-oc0-ceph-0", 0),
        ("oc1-controller-0", "dcn-oc1-controller-0", 1),
        ("oc1-ceph-0", "dcn-oc1-ceph-0", 1),
    ]
    assert {n.vm_name for n in lab.nodes if n.overcloud == 1} == {"controller-0", "ceph-0"}
    assert lab.name == "dcn"  # no labvirt.name: the prefix names the lab


def test_osd_disks_only_on_ceph_nodes(tmp_path: Path) -> None:
    lab = lab_from(tmp_path, """\
        num_osds: 3
        vms:
          - {name: undercloud}
          - {name: controller-0, disksize: 40}
          - {name: ceph-0, swap: 4G}
          - {name: compute-ceph-1}
        """)
    assert [d.role for d in lab.node("undercloud").disks] == ["root"]
    assert [d.role for d in lab.node("oc0-controller-0").disks] == ["root"]
    assert [d.role for d in lab.node("oc0-compute-ceph-1").disks] == ["root"]  # ^ceph- only
    ceph = lab.node("oc0-ceph-0")
    assert [(d.role, d.target, d.volume, d.size_bytes) for d in ceph.disks] == [
        ("root", "vda", "lab-oc0-ceph-0.qcow2", 100 * GIB),
        ("osd-0", "vdb", "lab-oc0-ceph-0-osd-0.qcow2", 50 * GIB),
        ("osd-1", "vdc", "lab-oc0-ceph-0-osd-1.qcow2", 50 * GIB),
        ("osd-2", "vdd", "lab-oc0-ceph-0-osd-2.qcow2", 50 * GIB),
        ("swap", "vde", "lab-oc0-ceph-0-swap.qcow2", 4 * GIB),
    ]
    assert lab.node("oc0-controller-0").disks[0].size_bytes == 40 * GIB


def test_disk_targets_follow_disk_order() -> None:
    lab = lab_of(GLANCE)  # num_osds: 12 -> 13 disks on every ceph node
    disks = lab.node("oc0-ceph-0").disks
    assert [d.target for d in disks] == [f"vd{c}" for c in "abcdefghijklm"]
    assert [d.role for d in disks] == ["root", *(f"osd-{i}" for i in range(12))]


def test_disk_targets_up_to_vdz(tmp_path: Path) -> None:
    lab = lab_from(tmp_path, "num_osds: 24\nvms: [{name: undercloud}, {name: ceph-0, swap: 1G}]\n")
    disks = lab.node("oc0-ceph-0").disks
    assert [d.target for d in disks] == [f"vd{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    assert (disks[0].role, disks[-1].role) == ("root", "swap")


def test_interfaces_without_network_land_on_ctlplane(tmp_path: Path) -> None:
    lab = lab_from(tmp_path, """\
        vms:
          - name: undercloud
            interfaces: [{network: default}, {mac: "24:42:53:21:52:01"}]
          - name: ceph-0
            interfaces: [eth0, {mac: "24:42:53:21:52:20"}, {network: storage}, ~]
        """)
    assert [n.network for n in lab.node("undercloud").nics] == ["default", "ctlplane"]
    assert [n.network for n in lab.node("oc0-ceph-0").nics] == [
        "ctlplane", "ctlplane", "storage", "ctlplane"]
    assert [n.name for n in lab.networks] == ["default", "ctlplane", "storage"]


def test_macs_are_unique_stable_and_local() -> None:
    lab = lab_of(GLANCE, TINY)
    macs = [nic.mac for n in lab.nodes for nic in n.nics] + [n.mgmt_mac for n in lab.nodes]
    assert len(macs) == len(set(macs)) == 30
    assert all(m and m.startswith("52:54:00:") for m in macs)
    again = lab_of(GLANCE, TINY)
    assert [nic.mac for n in again.nodes for nic in n.nics] == [
        nic.mac for n in lab.nodes for nic in n.nics]
    # the file's fixed MACs are ignored unless asked for (as upstream since 2019)
    assert "24:42:53:21:52:28" not in macs
    # the tiny layer changes sizes, not identities
    assert lab_of(GLANCE).node("oc0-ceph-4").nics == lab.node("oc0-ceph-4").nics


def test_macs_belong_to_the_node_not_its_position(tmp_path: Path) -> None:
    """A MAC derives from the lab's and the node's names: a smaller layout of the same lab
    gives the node the same MACs (leases and known_hosts entries stay valid)."""
    lab = lab_from(tmp_path, """\
        labvirt: {name: glance-dcn}
        vms: [{name: undercloud}, {name: ceph-4, interfaces: [{}, {}]}]
        """)
    assert lab.node("oc0-ceph-4").nics == lab_of(GLANCE).node("oc0-ceph-4").nics


def test_honour_macs_uses_the_files_macs(tmp_path: Path) -> None:
    honour = tmp_path / "honour.yml"
    honour.write_text("labvirt: {honour_macs: true}\n")
    lab = lab_of(GLANCE, honour)
    assert [n.mac for n in lab.node("oc0-ceph-4").nics] == [
        "24:42:53:21:52:28", "24:42:53:21:52:29"]
    assert [n.mac for n in lab.node("oc0-controller-0").nics] == [
        "24:42:53:21:52:10", "24:42:53:21:52:11"]
    undercloud = [n.mac for n in lab.node("undercloud").nics]
    assert undercloud[1] == "24:42:53:21:52:01"
    assert undercloud[0].startswith("52:54:00:")  # no mac in the file: generated
    macs = [nic.mac for n in lab.nodes for nic in n.nics]
    assert len(macs) == len(set(macs))


def test_ctlplane_addresses_from_first_ip() -> None:
    lab = lab_of(GLANCE)
    assert lab.node("undercloud").ctlplane_ip == ip("192.168.24.1")
    assert [str(n.ctlplane_ip) for n in lab.overcloud_nodes] == [
        f"192.168.24.{i}" for i in range(30, 39)]
    assert lab.ctlplane.host_ip == ip("192.168.24.254")


def test_ctlplane_overrides_are_honoured_and_skipped(tmp_path: Path) -> None:
    lab = lab_from(tmp_path, """\
        vms: [{name: undercloud}, {name: ceph-0}, {name: ceph-1}, {name: ceph-2}, {name: ceph-3}]
        labvirt:
          ctlplane:
            cidr: 10.0.0.0/24
            gateway: 10.0.0.1
            undercloud_ip: 10.0.0.2
            first_ip: 10.0.0.1
            host_ip: 10.0.0.4
          nodes:
            oc0-ceph-2: {ctlplane_ip: 10.0.0.3}
            oc0-ceph-3: {ctlplane_ip: 10.0.0.200}
        """)
    assert lab.node("undercloud").ctlplane_ip == ip("10.0.0.2")
    # .1 gateway, .2 undercloud, .3 taken by ceph-2, .4 the hypervisor: free ones are .5, .6
    assert [str(lab.node(f"oc0-ceph-{i}").ctlplane_ip) for i in range(4)] == [
        "10.0.0.5", "10.0.0.6", "10.0.0.3", "10.0.0.200"]
    ips = [n.ctlplane_ip for n in lab.nodes]
    assert len(ips) == len(set(ips))


def test_ctlplane_running_out_of_addresses_is_an_error(tmp_path: Path) -> None:
    from labvirt.errors import LayoutErrors

    with pytest.raises(LayoutErrors) as info:  # counted when the layout is read
        lab_from(tmp_path, """\
            vms: [{name: undercloud}, {name: ceph-0}, {name: ceph-1}, {name: ceph-2}]
            labvirt: {ctlplane: {cidr: 10.0.0.0/29, first_ip: 10.0.0.4}}
            """)
    assert ("labvirt.ctlplane.first_ip: the ctlplane network 10.0.0.0/29 has 2 free "
            "address(es) from first_ip 10.0.0.4 to 10.0.0.6, and 3 node(s) need one"
            in info.value.render())


def test_tiny_layer() -> None:
    lab = lab_of(GLANCE, TINY)
    assert lab.domain_type == "qemu"
    assert lab.access == "forward"
    assert (lab.uefi, lab.machine) == (False, "pc")
    assert lab.image == "tiny"
    for n in lab.nodes:
        assert n.memory_kib == 256 * MIB // 1024
        assert n.cpu == 1
        assert n.disks[0].size_bytes == GIB
        assert all(d.size_bytes == GIB for d in n.disks if d.role.startswith("osd-"))
    assert len(lab.node("oc0-ceph-0").disks) == 3  # tiny's num_osds: 2
    ports = [n.ssh_port for n in lab.nodes]
    base = default_port_base("glance-dcn")
    assert ports == list(range(base, base + len(lab.nodes)))
    assert base >= 20000
    assert base + 100 <= 65536
    assert lab_of(GLANCE, TINY) == lab


def test_bridge_access_without_tiny() -> None:
    lab = lab_of(GLANCE)
    assert lab.access == "bridge"
    assert all(n.ssh_port is None and n.mgmt_mac is None for n in lab.nodes)
    cp = lab.network("ctlplane")
    assert str(cp.address) == "192.168.24.254/24"
    assert cp.forward == "isolated"


def test_build_twice_is_identical() -> None:
    assert lab_to_dict(lab_of(GLANCE, TINY)) == lab_to_dict(lab_of(GLANCE, TINY))


def test_show_is_identical_across_processes_and_hash_seeds() -> None:
    outs = {labvirt(*DEMO, "show", "--format", "json", env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("0", "1", "12345")}
    assert len(outs) == 1
    data = json.loads(outs.pop())
    assert data["lab"]["name"] == "glance-dcn"
