"""`up`, `plan`, `status` and `down` against libvirt's test driver (the fast tier)."""

from __future__ import annotations

import pytest

from labvirt.errors import InputError
from labvirt.ops import provision
from labvirt.ops import stacks as stack_ops
from labvirt.render import NS

pytestmark = pytest.mark.testdriver

FOREIGN_DOMAIN = """<domain type='test'>
  <name>{name}</name>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


def _lab_objects(tdlab):
    obs = tdlab.hv.observe((tdlab.session.lab().pool_name,))
    lab = tdlab.session.lab()
    doms = sorted(d.name for d in obs.domains if d.owner and d.owner.lab == lab.name)
    nets = sorted(n.name for n in obs.networks if n.owner and n.owner.lab == lab.name)
    return obs, doms, nets


def test_up_creates_everything_and_is_idempotent(tdlab):
    first = provision.up(tdlab.session, hv=tdlab.hv)
    assert first.report is not None and first.report.ok
    lab = tdlab.session.lab()
    obs, doms, nets = _lab_objects(tdlab)
    assert doms == sorted(n.domain for n in lab.nodes)
    assert nets == sorted(n.libvirt_name for n in lab.networks)
    pool = obs.pool(lab.pool_name)
    assert pool is not None and pool.active
    want = sorted(d.volume for n in lab.nodes for d in n.disks)
    assert sorted(v.name for v in pool.volumes) == want
    # PXE nodes are defined and left off, as tripleo-lab leaves them
    assert {d.state for d in obs.domains} == {"shut-off"}

    second = provision.up(tdlab.session, hv=tdlab.hv)
    assert second.plan.empty, [a.describe() for a in second.plan.actions]
    assert second.report is None
    assert sorted(second.plan.unchanged) == sorted(n.hostname for n in lab.nodes)


def test_domain_metadata_names_lab_node_stack_and_role(tdlab):
    provision.up(tdlab.session, hv=tdlab.hv)
    obs, _, _ = _lab_objects(tdlab)
    dom = obs.domain("lab-oc0-ceph-4")
    assert dom is not None and dom.owner is not None
    assert (dom.owner.lab, dom.owner.name, dom.owner.stack, dom.owner.role) == (
        "tdlab", "oc0-ceph-4", "dcn0", "DistributedComputeHCI")
    assert NS in dom.xml


def test_assignment_change_updates_metadata_without_redefining(tdlab):
    provision.up(tdlab.session, hv=tdlab.hv)
    uuid_before = tdlab.hv.observe().domain("lab-oc0-ceph-4").uuid
    stack_ops.assign(tdlab.session, "central-compute", ("oc0-ceph-4",), None)
    result = provision.up(tdlab.session, hv=tdlab.hv)
    kinds = [(a.kind, a.node) for a in result.plan.actions]
    assert kinds == [("update-metadata", "oc0-ceph-4")]
    dom = tdlab.hv.observe().domain("lab-oc0-ceph-4")
    assert dom.owner.stack == "central-compute" and dom.owner.role == "Compute"
    assert dom.uuid == uuid_before


def test_drift_is_reported_not_applied_until_recreate(tdlab):
    provision.up(tdlab.session, hv=tdlab.hv)
    session = tdlab.relayer({"labvirt": {"resize": {"cpu": 2, "memory": "384MiB"}}})
    result = provision.up(session, hv=tdlab.hv)
    assert result.plan.empty
    drifted = {d.node: d.changes for d in result.plan.drift}
    assert set(drifted) == {n.hostname for n in session.lab().nodes}
    assert "cpu 1 -> 2" in drifted["oc0-ceph-4"]
    assert "memory 256 -> 384 MiB" in drifted["oc0-ceph-4"]
    assert tdlab.hv.observe().domain("lab-oc0-ceph-4").hardware()["cpu"] == 1

    applied = provision.up(session, hv=tdlab.hv, recreate=("oc0-ceph-4",))
    assert applied.report is not None and applied.report.ok
    hw = tdlab.hv.observe().domain("lab-oc0-ceph-4").hardware()
    assert hw["cpu"] == 2 and hw["memory_kib"] == 384 * 1024
    assert tdlab.hv.observe().domain("lab-oc0-ceph-3").hardware()["cpu"] == 1
    remaining = {d.node for d in provision.up(session, hv=tdlab.hv, dry_run=True).plan.drift}
    assert "oc0-ceph-4" not in remaining and "oc0-ceph-3" in remaining


def test_unmanaged_domain_with_colliding_name_is_refused_and_untouched(tdlab):
    xml = FOREIGN_DOMAIN.format(name="lab-oc0-ceph-4")
    tdlab.hv.conn.defineXML(xml)
    before = tdlab.hv.conn.lookupByName("lab-oc0-ceph-4").XMLDesc(0)
    with pytest.raises(InputError) as err:
        provision.up(tdlab.session, hv=tdlab.hv)
    message = err.value.render()
    assert "domain lab-oc0-ceph-4 already exists" in message
    assert "vm_prefix" in message
    assert tdlab.hv.conn.lookupByName("lab-oc0-ceph-4").XMLDesc(0) == before
    # nothing was created: conflicts are found before any change
    _, doms, nets = _lab_objects(tdlab)
    assert doms == [] and nets == []
    # and down does not remove what is not ours
    provision.down(tdlab.session, hv=tdlab.hv)
    assert tdlab.hv.conn.lookupByName("lab-oc0-ceph-4").XMLDesc(0) == before


def test_foreign_network_bridge_and_cidr_collisions_are_refused(tdlab):
    lab = tdlab.session.lab()
    bridge = lab.network("ctlplane").bridge
    tdlab.hv.conn.networkDefineXML(
        f"<network><name>someone-else</name><bridge name='{bridge}'/>"
        "<ip address='192.168.24.1' prefix='24'/></network>")
    session = tdlab.relayer({"labvirt": {"access": "bridge"}})
    with pytest.raises(InputError) as err:
        provision.up(session, hv=tdlab.hv)
    text = err.value.render()
    assert f"bridge {bridge} of network tdlab-ctlplane is used by network someone-else" in text
    assert "overlaps network someone-else (192.168.24.1/24)" in text


def test_down_removes_exactly_the_lab(tdlab):
    tdlab.hv.conn.defineXML(FOREIGN_DOMAIN.format(name="bystander"))
    provision.up(tdlab.session, hv=tdlab.hv)
    lab = tdlab.session.lab()
    result = provision.down(tdlab.session, hv=tdlab.hv)
    assert f"pool {lab.pool_name}" in result.removed
    obs, doms, nets = _lab_objects(tdlab)
    assert doms == [] and nets == []
    assert obs.pool(lab.pool_name) is None
    assert [d.name for d in obs.domains] == ["bystander"]
    assert provision.down(tdlab.session, hv=tdlab.hv).removed == []


def test_down_keeps_a_foreign_volume_and_therefore_the_pool(tdlab):
    provision.up(tdlab.session, hv=tdlab.hv)
    lab = tdlab.session.lab()
    pool = tdlab.hv.conn.storagePoolLookupByName(lab.pool_name)
    pool.createXML("<volume><name>precious.img</name><capacity>1024</capacity></volume>", 0)
    result = provision.down(tdlab.session, hv=tdlab.hv)
    assert "volume precious.img (not labvirt's)" in result.kept
    assert any("holds files that are not labvirt's" in k for k in result.kept)
    assert tdlab.hv.conn.storagePoolLookupByName(lab.pool_name).storageVolLookupByName(
        "precious.img")


def test_status_lists_every_node_in_one_pass(tdlab):
    provision.up(tdlab.session, hv=tdlab.hv)
    rows = {r.hostname: r for r in provision.status(tdlab.session, hv=tdlab.hv)}
    assert len(rows) == 10
    ceph4 = rows["oc0-ceph-4"]
    assert (ceph4.state, ceph4.stack, ceph4.role) == ("shut-off", "dcn0", "DistributedComputeHCI")
    assert ceph4.disk_capacity == 3 * 1024**3  # root + two OSDs of the tiny layer
    assert ceph4.ctlplane_ip == "192.168.24.37"


def test_plan_changes_nothing(tdlab):
    plan = provision.up(tdlab.session, hv=tdlab.hv, dry_run=True).plan
    kinds = {a.kind for a in plan.actions}
    assert {"create-network", "create-pool", "create-volume", "define-domain"} <= kinds
    _, doms, nets = _lab_objects(tdlab)
    assert doms == [] and nets == []


def test_a_lab_too_big_for_the_host_is_refused_with_numbers_before_anything(tdlab):
    session = tdlab.relayer({"labvirt": {"boot": "image", "image": "tiny",
                                         "nodes": {"undercloud": {"boot": "image"}},
                                         "resize": {"memory": "64GiB"}}})
    host = tdlab.hv.host().memory_bytes / 1000**3
    with pytest.raises(InputError) as err:
        provision.up(session, hv=tdlab.hv)
    assert err.value.render().startswith(
        f"error: preflight failed: the lab needs {10 * 64 * 1.073741824:.1f} GB of RAM, "
        f"the host has {host:.1f} GB")
    assert "overrides/tiny.yml" in err.value.hint
    _, doms, nets = _lab_objects(tdlab)
    assert doms == [] and nets == []
