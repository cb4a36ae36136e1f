"""Lab snapshots (labvirt.ops.snapshot) on the full ten-node demo lab, on libvirt's test
driver: the snapshot records and the overlay bookkeeping behind create, restore, delete.

Every node of the test layer boots from the network, so `up` leaves them all shut off;
tests that need running nodes start them through the test driver, which shuts a domain
down at once when asked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from labvirt.errors import InputError, LibvirtFailure
from labvirt.layers import stem
from labvirt.ops import provision, snapshot
from labvirt.render import VolumeView, render_volume_xml

pytestmark = pytest.mark.testdriver

GIB = 1024**3
ALL = ["undercloud", "oc0-controller-0", "oc0-controller-1", "oc0-controller-2",
       "oc0-ceph-0", "oc0-ceph-1", "oc0-ceph-2", "oc0-ceph-3", "oc0-ceph-4", "oc0-ceph-5"]


# --- what the hypervisor holds, read straight from libvirt ---------------------------------


def _pool(tdlab):
    return tdlab.hv.conn.storagePoolLookupByName(tdlab.session.lab().pool_name)


def volumes(tdlab) -> set[str]:
    pool = _pool(tdlab)
    pool.refresh(0)
    return set(pool.listVolumes())


def backing(tdlab, name: str) -> str | None:
    """The backing file of a volume, from its libvirt volume XML."""
    xml = _pool(tdlab).storageVolLookupByName(name).XMLDesc(0)
    return ET.fromstring(xml).findtext("./backingStore/path")


def sources(tdlab, domain: str) -> dict[str, str]:
    """Target device -> volume, from the domain's persistent definition."""
    xml = tdlab.hv.conn.lookupByName(domain).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    root = ET.fromstring(xml)
    return {d.find("target").get("dev"): d.find("source").get("volume")
            for d in root.iterfind("./devices/disk[@device='disk']")}


def all_sources(tdlab) -> dict[str, dict[str, str]]:
    return {n.hostname: sources(tdlab, n.domain) for n in tdlab.session.lab().nodes}


def definitions(tdlab) -> dict[str, str]:
    return {n.hostname: tdlab.hv.conn.lookupByName(n.domain).XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE) for n in tdlab.session.lab().nodes}


def path_of(tdlab, name: str) -> str:
    return f"{tdlab.session.lab().pool_path.rstrip('/')}/{name}"


def chain(tdlab, top: str) -> list[str]:
    """A volume and everything under it, top first."""
    pool = _pool(tdlab)
    by_path = {pool.storageVolLookupByName(v).path(): v for v in volumes(tdlab)}
    out = [top]
    while (b := backing(tdlab, out[-1])) is not None:
        out.append(by_path[b])
    return out


def layer(disk_volume: str, n: int) -> str:
    return f"{stem(disk_volume)}.s{n}.qcow2"


def every_layer(tdlab, n: int) -> set[str]:
    return {layer(d.volume, n) for node in tdlab.session.lab().nodes for d in node.disks}


def bases(tdlab) -> set[str]:
    return {d.volume for node in tdlab.session.lab().nodes for d in node.disks}


def assert_on_layer(tdlab, n: int, backed_by: int | None) -> None:
    """Every disk of every node writes to layer n, which sits on layer `backed_by` (None:
    the base volume)."""
    for node in tdlab.session.lab().nodes:
        srcs = sources(tdlab, node.domain)
        for d in node.disks:
            assert srcs[d.target] == layer(d.volume, n), (node.hostname, d.role)
            below = d.volume if backed_by is None else layer(d.volume, backed_by)
            assert backing(tdlab, layer(d.volume, n)) == path_of(tdlab, below)


def make_orphan(tdlab, name: str, on: str) -> None:
    """What an interrupted run leaves: an overlay volume no domain and no record names."""
    lab = tdlab.session.lab()
    xml = render_volume_xml(VolumeView(name, GIB, "qcow2", path_of(tdlab, on), "qcow2"))
    tdlab.hv.create_volume(lab.pool_name, name, xml)


@pytest.fixture
def lab(tdlab):
    result = provision.up(tdlab.session, hv=tdlab.hv)
    assert result.report is not None and result.report.ok
    assert [n.hostname for n in tdlab.session.lab().nodes] == ALL
    assert volumes(tdlab) == bases(tdlab)  # 22 disks, no layers yet
    return tdlab


# --- create --------------------------------------------------------------------------------


def test_create_freezes_every_disk_and_records_the_lab(lab):
    said: list[tuple[str, str]] = []
    assert not every_layer(lab, 1) & volumes(lab)
    report = snapshot.create(lab.session, "clean", description="after up", hv=lab.hv,
                             progress=lambda n, m: said.append((n, m)))
    assert report.ok, {h: o.error for h, o in report.nodes.items()}
    assert sorted(report.nodes) == sorted(ALL) and report.collected == []
    assert all(o.steps == ["already off", f"froze {len(lab.session.lab().node(h).disks)} disk(s)"]
               for h, o in report.nodes.items())
    assert {(h, "freezing disks") for h in ALL} <= set(said)

    rec = lab.session.load_state().snapshots["clean"]
    lab_model = lab.session.lab()
    assert rec["nodes"] == ALL
    assert rec["incomplete"] == [] and rec["running"] == []
    assert rec["description"] == "after up" and rec["kind"] == "overlay"
    for node in lab_model.nodes:
        # the frozen layer of each disk is its base volume
        assert rec["layers"][node.hostname] == {d.role: d.volume for d in node.disks}
        member = lab_model.stack_of(node.hostname)
        assert rec["stacks"][node.hostname] == (list(member) if member else None)
    assert rec["stacks"]["oc0-ceph-4"] == ["dcn0", "DistributedComputeHCI"]
    assert rec["stacks"]["undercloud"] is None
    assert sum(len(v) for v in rec["layers"].values()) == 22

    # every domain now writes to a fresh .s1 layer on its base volume
    assert_on_layer(lab, 1, backed_by=None)
    assert sources(lab, "lab-oc0-ceph-4") == {
        "vda": "lab-oc0-ceph-4.s1.qcow2", "vdb": "lab-oc0-ceph-4-osd-0.s1.qcow2",
        "vdc": "lab-oc0-ceph-4-osd-1.s1.qcow2"}
    assert volumes(lab) == bases(lab) | every_layer(lab, 1)
    for name in every_layer(lab, 1):
        fmt = ET.fromstring(_pool(lab).storageVolLookupByName(name).XMLDesc(0)).find(
            "./target/format")
        assert fmt is not None and fmt.get("type") == "qcow2"

    listed = snapshot.listing(lab.session)
    assert [s["name"] for s in listed] == ["clean"]
    assert listed[0]["nodes"] == ALL and listed[0]["incomplete"] == []
    # the layers are what `up` expects to find: nothing to do, no drift
    again = provision.up(lab.session, hv=lab.hv, dry_run=True).plan
    assert again.empty and not again.drift


def test_create_stops_running_nodes_and_starts_them_again(lab):
    for dom in ("lab-undercloud", "lab-oc0-ceph-4"):
        lab.hv.start_domain(dom)
    report = snapshot.create(lab.session, "clean", hv=lab.hv, shutdown_timeout=5)
    assert report.ok
    # the test driver honours the graceful shutdown at once
    assert report.nodes["oc0-ceph-4"].steps == ["shut down", "froze 3 disk(s)", "started"]
    assert report.nodes["undercloud"].steps == ["shut down", "froze 1 disk(s)", "started"]
    assert report.nodes["oc0-ceph-3"].steps == ["already off", "froze 3 disk(s)"]
    rec = lab.session.load_state().snapshots["clean"]
    assert sorted(rec["running"]) == ["oc0-ceph-4", "undercloud"]
    assert lab.hv.domain_state("lab-oc0-ceph-4") == "running"
    assert lab.hv.domain_state("lab-oc0-ceph-3") == "shut-off"
    # the running domain runs on the new layer, not only its definition
    live = ET.fromstring(lab.hv.conn.lookupByName("lab-oc0-ceph-4").XMLDesc(0))
    assert live.find("./devices/disk/source").get("volume") == "lab-oc0-ceph-4.s1.qcow2"

    # restore asks about the nodes it resets; a refusal changes nothing
    lab.hv.start_domain("lab-oc0-ceph-3")
    before, vols = definitions(lab), volumes(lab)
    asked: list[list[str]] = []

    def refuse(live_nodes):
        asked.append(sorted(live_nodes))
        return False

    with pytest.raises(InputError, match="cancelled"):
        snapshot.restore(lab.session, "clean", hv=lab.hv, confirm=refuse)
    assert asked == [["oc0-ceph-3", "oc0-ceph-4", "undercloud"]]
    assert definitions(lab) == before and volumes(lab) == vols
    assert lab.hv.domain_state("lab-oc0-ceph-3") == "running"

    report = snapshot.restore(lab.session, "clean", hv=lab.hv, confirm=lambda _: True)
    assert report.ok
    # back as at the snapshot: what ran then runs, what was off is off
    assert lab.hv.domain_state("lab-oc0-ceph-4") == "running"
    assert lab.hv.domain_state("lab-undercloud") == "running"
    assert lab.hv.domain_state("lab-oc0-ceph-3") == "shut-off"
    assert "started" in report.nodes["oc0-ceph-4"].steps
    assert "started" not in report.nodes["oc0-ceph-3"].steps
    assert_on_layer(lab, 2, backed_by=None)


# --- restore -------------------------------------------------------------------------------


def test_two_snapshots_and_restores_in_both_directions(lab):
    assert snapshot.create(lab.session, "clean", hv=lab.hv).ok
    assert snapshot.create(lab.session, "later", hv=lab.hv).ok
    state = lab.session.load_state()
    for node in lab.session.lab().nodes:
        # `later` froze the .s1 layers; the domains write to .s2 on top of them
        assert state.snapshots["later"]["layers"][node.hostname] == {
            d.role: layer(d.volume, 1) for d in node.disks}
    assert_on_layer(lab, 2, backed_by=1)
    assert volumes(lab) == bases(lab) | every_layer(lab, 1) | every_layer(lab, 2)

    report = snapshot.restore(lab.session, "clean", hv=lab.hv)
    assert report.ok
    assert all(o.steps == ["stopped", f"restored {len(lab.session.lab().node(h).disks)} disk(s)"]
               for h, o in report.nodes.items())
    assert_on_layer(lab, 3, backed_by=None)
    # the abandoned tops went; the .s1 layers stay because `later` needs them
    assert sorted(report.collected) == sorted(every_layer(lab, 2))
    assert volumes(lab) == bases(lab) | every_layer(lab, 1) | every_layer(lab, 3)

    report = snapshot.restore(lab.session, "later", hv=lab.hv)
    assert report.ok
    assert_on_layer(lab, 4, backed_by=1)
    assert sorted(report.collected) == sorted(every_layer(lab, 3))
    assert volumes(lab) == bases(lab) | every_layer(lab, 1) | every_layer(lab, 4)
    # both records are untouched by restores
    assert set(lab.session.load_state().snapshots) == {"clean", "later"}
    plan = provision.up(lab.session, hv=lab.hv, dry_run=True).plan
    assert plan.empty and not plan.drift


def test_restore_scoped_to_a_stack_touches_only_its_nodes(lab):
    assert snapshot.create(lab.session, "clean", hv=lab.hv).ok
    before = definitions(lab)
    before_src = all_sources(lab)
    report = snapshot.restore(lab.session, "clean", stack="dcn0", hv=lab.hv)
    assert report.ok and list(report.nodes) == ["oc0-ceph-4"]
    after = definitions(lab)
    for host in ALL:
        if host != "oc0-ceph-4":
            assert after[host] == before[host], host
    assert sources(lab, "lab-oc0-ceph-4") == {
        "vda": "lab-oc0-ceph-4.s2.qcow2", "vdb": "lab-oc0-ceph-4-osd-0.s2.qcow2",
        "vdc": "lab-oc0-ceph-4-osd-1.s2.qcow2"}
    assert backing(lab, "lab-oc0-ceph-4-osd-1.s2.qcow2") == path_of(
        lab, "lab-oc0-ceph-4-osd-1.qcow2")
    # only oc0-ceph-4's abandoned tops were collected
    assert sorted(report.collected) == sorted(before_src["oc0-ceph-4"].values())

    # a restore of chosen nodes, likewise
    before_src = all_sources(lab)
    report = snapshot.restore(lab.session, "clean", nodes=("oc0-ceph-3", "oc0-ceph-5"),
                              hv=lab.hv)
    assert report.ok and sorted(report.nodes) == ["oc0-ceph-3", "oc0-ceph-5"]
    after_src = all_sources(lab)
    changed = sorted(h for h in ALL if after_src[h] != before_src[h])
    assert changed == ["oc0-ceph-3", "oc0-ceph-5"]
    assert after_src["oc0-ceph-3"]["vda"] == "lab-oc0-ceph-3.s2.qcow2"


# --- delete --------------------------------------------------------------------------------


def test_delete_keeps_layers_that_others_build_on(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    vols = volumes(lab)
    assert snapshot.delete(lab.session, "clean", hv=lab.hv) == []
    assert volumes(lab) == vols
    assert set(lab.session.load_state().snapshots) == {"later"}
    assert snapshot.restore(lab.session, "later", hv=lab.hv).ok
    assert_on_layer(lab, 3, backed_by=1)

    # with every snapshot gone, the current tops and their chains are all that is left
    assert snapshot.delete(lab.session, "later", hv=lab.hv) == []
    assert lab.session.load_state().snapshots == {}
    assert snapshot.listing(lab.session) == []
    needed = {v for srcs in all_sources(lab).values() for top in srcs.values()
              for v in chain(lab, top)}
    assert needed == bases(lab) | every_layer(lab, 1) | every_layer(lab, 3)
    assert volumes(lab) == needed


def test_delete_frees_layers_only_that_snapshot_needed(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    snapshot.restore(lab.session, "clean", hv=lab.hv)  # domains on .s3, on the base
    freed = snapshot.delete(lab.session, "later", hv=lab.hv)
    assert sorted(freed) == sorted(every_layer(lab, 1))
    assert volumes(lab) == bases(lab) | every_layer(lab, 3)
    assert_on_layer(lab, 3, backed_by=None)
    assert snapshot.delete(lab.session, "clean", hv=lab.hv) == []
    assert volumes(lab) == bases(lab) | every_layer(lab, 3)


def test_collection_never_breaks_or_takes_a_volume_that_is_not_the_labs(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    snapshot.restore(lab.session, "clean", hv=lab.hv)  # now only `later` needs the .s1
    pool = _pool(lab)
    # someone built their own volume on one of the lab's layers, and keeps a volume whose
    # name looks like a layer
    pool.createXML(render_volume_xml(VolumeView(
        "precious.qcow2", GIB, "qcow2", path_of(lab, "lab-oc0-ceph-4.s1.qcow2"))), 0)
    pool.createXML(render_volume_xml(VolumeView("other-vm.s1.qcow2", GIB, "qcow2")), 0)
    freed = snapshot.delete(lab.session, "later", hv=lab.hv)
    assert sorted(freed) == sorted(every_layer(lab, 1) - {"lab-oc0-ceph-4.s1.qcow2"})
    assert {"precious.qcow2", "other-vm.s1.qcow2", "lab-oc0-ceph-4.s1.qcow2"} <= volumes(lab)
    assert chain(lab, "precious.qcow2") == ["precious.qcow2", "lab-oc0-ceph-4.s1.qcow2",
                                            "lab-oc0-ceph-4.qcow2"]


def test_layers_chain_by_the_path_libvirt_reports_however_pool_path_is_spelled(tdlab):
    # libvirt collapses the `//`; the layers must still be recognised as backing files
    spelled = f"{tdlab.tmp}//pool2/"
    session = tdlab.relayer({"labvirt": {"pool_path": spelled}})
    assert session.lab().pool_path == f"{tdlab.tmp}/pool2"  # the model normalises it
    provision.up(session, hv=tdlab.hv)
    snapshot.create(session, "clean", hv=tdlab.hv)
    snapshot.create(session, "later", hv=tdlab.hv)
    # nothing is free: the .s1 layers are what the domains' .s2 layers build on
    assert snapshot.delete(session, "later", hv=tdlab.hv) == []
    assert snapshot.delete(session, "clean", hv=tdlab.hv) == []
    s1 = _pool(tdlab).storageVolLookupByName("lab-oc0-ceph-4.s1.qcow2").path()
    assert "//" not in s1
    assert backing(tdlab, "lab-oc0-ceph-4.s2.qcow2") == s1
    assert "lab-oc0-ceph-4.s1.qcow2" in volumes(tdlab)
    # the chains are whole: every top reaches its base through .s1
    for srcs in all_sources(tdlab).values():
        for top in srcs.values():
            assert chain(tdlab, top) == [top, f"{stem(top)}.s1.qcow2", f"{stem(top)}.qcow2"]


# --- errors --------------------------------------------------------------------------------


def test_unknown_snapshot_names_the_known_ones(lab):
    with pytest.raises(InputError) as err:
        snapshot.restore(lab.session, "clean", hv=lab.hv)
    assert err.value.hint == "snapshots of this lab: none"
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    before, vols = definitions(lab), volumes(lab)
    for op in (lambda: snapshot.restore(lab.session, "cleam", hv=lab.hv),
               lambda: snapshot.delete(lab.session, "cleam", hv=lab.hv)):
        with pytest.raises(InputError) as err:
            op()
        assert err.value.message == "no snapshot named 'cleam'"
        assert err.value.hint == "snapshots of this lab: clean, later"
    assert definitions(lab) == before and volumes(lab) == vols
    assert set(lab.session.load_state().snapshots) == {"clean", "later"}


def test_restoring_a_node_the_snapshot_does_not_cover_is_refused(lab):
    assert snapshot.create(lab.session, "edge", stack="dcn0", hv=lab.hv).ok
    rec = lab.session.load_state().snapshots["edge"]
    assert rec["nodes"] == ["oc0-ceph-4"] and list(rec["layers"]) == ["oc0-ceph-4"]
    before, vols = definitions(lab), volumes(lab)
    for scope in ({"nodes": ("oc0-ceph-4", "oc0-ceph-5")}, {"stack": "dcn1"}):
        with pytest.raises(InputError) as err:
            snapshot.restore(lab.session, "edge", hv=lab.hv, **scope)
        assert err.value.message == "snapshot 'edge' does not cover oc0-ceph-5"
        assert "it holds: oc0-ceph-4" in err.value.hint
    assert definitions(lab) == before and volumes(lab) == vols
    # unscoped, it restores exactly what it holds
    report = snapshot.restore(lab.session, "edge", hv=lab.hv)
    assert list(report.nodes) == ["oc0-ceph-4"] and report.ok


def test_create_with_an_existing_name_is_refused(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    before, vols = definitions(lab), volumes(lab)
    rec = lab.session.load_state().snapshots["clean"]
    with pytest.raises(InputError) as err:
        snapshot.create(lab.session, "clean", hv=lab.hv)
    assert err.value.message == "snapshot 'clean' already exists"
    assert "snapshot delete clean" in err.value.hint
    with pytest.raises(InputError, match="already exists"):
        snapshot.create(lab.session, "clean", stack="dcn0", hv=lab.hv)
    assert definitions(lab) == before and volumes(lab) == vols
    assert lab.session.load_state().snapshots["clean"] == rec


@pytest.mark.parametrize("name", ["", "two words", "a/b", "../x", "-dash", "dot.ted",
                                  "x" * 64, "clean\n"])
def test_invalid_snapshot_names_are_refused(lab, name):
    with pytest.raises(InputError, match="is not a valid snapshot name"):
        snapshot.create(lab.session, name, hv=lab.hv)
    assert volumes(lab) == bases(lab)
    assert lab.session.load_state().snapshots == {}


def test_a_vanished_layer_is_reported_before_anything_changes(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    lab.hv.delete_volume(lab.session.lab().pool_name, "lab-oc0-ceph-3-osd-1.s1.qcow2")
    before = definitions(lab)
    with pytest.raises(InputError, match=r"layer lab-oc0-ceph-3-osd-1.s1.qcow2 of oc0-ceph-3 "
                                         r"\(osd-1\) is gone"):
        snapshot.restore(lab.session, "later", hv=lab.hv)
    assert definitions(lab) == before


# --- interrupted runs ----------------------------------------------------------------------


def test_orphan_layers_of_an_interrupted_run_are_collected_by_the_next_one(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    # an interrupted run left overlays that no domain and no record names: a chain of two on
    # oc0-ceph-4's root disk and one on an OSD of oc0-ceph-2
    make_orphan(lab, "lab-oc0-ceph-4.s2.qcow2", on="lab-oc0-ceph-4.s1.qcow2")
    make_orphan(lab, "lab-oc0-ceph-4.s3.qcow2", on="lab-oc0-ceph-4.s2.qcow2")
    make_orphan(lab, "lab-oc0-ceph-2-osd-1.s7.qcow2", on="lab-oc0-ceph-2-osd-1.qcow2")
    orphans = {"lab-oc0-ceph-4.s2.qcow2", "lab-oc0-ceph-4.s3.qcow2",
               "lab-oc0-ceph-2-osd-1.s7.qcow2"}
    assert orphans <= volumes(lab)

    report = snapshot.create(lab.session, "later", hv=lab.hv)
    assert report.ok
    assert set(report.collected) == orphans
    # the chain went top first
    assert report.collected.index("lab-oc0-ceph-4.s3.qcow2") < report.collected.index(
        "lab-oc0-ceph-4.s2.qcow2")
    # the new layers are fresh overlays on what the domains wrote to
    assert_on_layer(lab, 2, backed_by=1)
    assert volumes(lab) == bases(lab) | every_layer(lab, 1) | every_layer(lab, 2)

    # restore and delete collect too
    make_orphan(lab, "lab-oc0-ceph-5.s9.qcow2", on="lab-oc0-ceph-5.qcow2")
    assert "lab-oc0-ceph-5.s9.qcow2" in snapshot.delete(lab.session, "clean", hv=lab.hv)
    make_orphan(lab, "lab-oc0-ceph-5.s9.qcow2", on="lab-oc0-ceph-5.qcow2")
    snapshot.restore(lab.session, "later", stack="dcn0", hv=lab.hv)
    assert "lab-oc0-ceph-5.s9.qcow2" not in volumes(lab)


def test_a_failed_node_is_reported_and_finished_by_running_create_again(lab, monkeypatch):
    real = lab.hv.create_volume

    def failing(pool, name, xml):
        if name == "lab-oc0-ceph-4-osd-0.s1.qcow2":
            raise LibvirtFailure(f"cannot create volume {name} in pool {pool}: disk full")
        real(pool, name, xml)

    monkeypatch.setattr(lab.hv, "create_volume", failing)
    before = all_sources(lab)
    report = snapshot.create(lab.session, "clean", hv=lab.hv)
    assert not report.ok
    assert "disk full" in report.nodes["oc0-ceph-4"].error
    assert all(o.ok for h, o in report.nodes.items() if h != "oc0-ceph-4")
    rec = lab.session.load_state().snapshots["clean"]
    assert rec["incomplete"] == ["oc0-ceph-4"]
    assert rec["nodes"] == [h for h in ALL if h != "oc0-ceph-4"]
    assert "oc0-ceph-4" not in rec["layers"]
    assert snapshot.listing(lab.session)[0]["incomplete"] == ["oc0-ceph-4"]
    # the failed node is as it was (its first disk's overlay is left as an orphan) ...
    assert sources(lab, "lab-oc0-ceph-4") == before["oc0-ceph-4"]
    assert "lab-oc0-ceph-4.s1.qcow2" in volumes(lab)
    # ... and the incomplete snapshot does not pretend to cover it
    with pytest.raises(InputError, match="does not cover oc0-ceph-4"):
        snapshot.restore(lab.session, "clean", nodes=("oc0-ceph-4",), hv=lab.hv)

    monkeypatch.setattr(lab.hv, "create_volume", real)
    others = {h: s for h, s in all_sources(lab).items() if h != "oc0-ceph-4"}
    report = snapshot.create(lab.session, "clean", hv=lab.hv)
    assert report.ok and list(report.nodes) == ["oc0-ceph-4"]
    assert report.collected == ["lab-oc0-ceph-4.s1.qcow2"]
    rec = lab.session.load_state().snapshots["clean"]
    assert rec["incomplete"] == [] and rec["nodes"] == ALL
    assert rec["layers"]["oc0-ceph-4"] == {"root": "lab-oc0-ceph-4.qcow2",
                                           "osd-0": "lab-oc0-ceph-4-osd-0.qcow2",
                                           "osd-1": "lab-oc0-ceph-4-osd-1.qcow2"}
    assert rec["stacks"]["oc0-ceph-4"] == ["dcn0", "DistributedComputeHCI"]
    assert {h: s for h, s in all_sources(lab).items() if h != "oc0-ceph-4"} == others
    assert_on_layer(lab, 1, backed_by=None)
    with pytest.raises(InputError, match="already exists"):
        snapshot.create(lab.session, "clean", hv=lab.hv)


# --- down and status -----------------------------------------------------------------------


def test_down_removes_every_layer_and_the_records(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    snapshot.restore(lab.session, "clean", hv=lab.hv)
    layers = every_layer(lab, 1) | every_layer(lab, 3)
    assert layers <= volumes(lab)
    lab_model = lab.session.lab()
    result = provision.down(lab.session, hv=lab.hv)
    assert {f"volume {v}" for v in layers | bases(lab)} <= set(result.removed)
    assert f"pool {lab_model.pool_name}" in result.removed
    assert lab_model.pool_name not in lab.hv.pool_names()
    assert lab.session.load_state().snapshots == {}
    assert snapshot.listing(lab.session) == []
    # a new lab starts its layers from .s1 again
    provision.up(lab.session, hv=lab.hv)
    assert volumes(lab) == bases(lab)
    assert snapshot.create(lab.session, "clean", hv=lab.hv).ok
    assert_on_layer(lab, 1, backed_by=None)


def test_status_sums_allocation_over_the_whole_chain(lab):
    def allocations():
        return {r.hostname: r for r in provision.status(lab.session, hv=lab.hv)}

    def chain_allocation(host: str) -> int:
        pool = _pool(lab)
        return sum(pool.storageVolLookupByName(v).info()[2]
                   for top in sources(lab, lab.session.lab().node(host).domain).values()
                   for v in chain(lab, top))

    rows = allocations()
    assert rows["oc0-ceph-4"].disk_allocation == chain_allocation("oc0-ceph-4") == 3 * GIB
    assert rows["oc0-ceph-4"].snapshots == ()
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "later", hv=lab.hv)
    rows = allocations()
    for host in ALL:
        # the test driver allocates a volume's full capacity: base + two layers per disk
        n_disks = len(lab.session.lab().node(host).disks)
        assert rows[host].disk_allocation == chain_allocation(host) == 3 * n_disks * GIB
        assert rows[host].disk_capacity == n_disks * GIB  # what the guest sees: unchanged
        assert rows[host].snapshots == ("clean", "later")


# --- the model changed under a snapshot ------------------------------------------------------


def test_recreating_a_node_takes_it_out_of_every_snapshot(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    snapshot.create(lab.session, "edge", stack="dcn0", hv=lab.hv)
    result = provision.up(lab.session, hv=lab.hv, recreate=("oc0-ceph-4",))
    assert result.report is not None and result.report.ok
    records = lab.session.load_state().snapshots
    assert "edge" not in records  # it held only oc0-ceph-4
    assert "oc0-ceph-4" not in records["clean"]["layers"]
    assert "oc0-ceph-4" not in records["clean"]["nodes"]
    # the rebuilt node has blank base disks and no layers of its old life
    assert sources(lab, "lab-oc0-ceph-4") == {"vda": "lab-oc0-ceph-4.qcow2",
                                              "vdb": "lab-oc0-ceph-4-osd-0.qcow2",
                                              "vdc": "lab-oc0-ceph-4-osd-1.qcow2"}
    assert not [v for v in volumes(lab) if v.startswith("lab-oc0-ceph-4") and ".s" in v]
    with pytest.raises(InputError, match="does not cover oc0-ceph-4"):
        snapshot.restore(lab.session, "clean", nodes=("oc0-ceph-4",), hv=lab.hv)
    snapshot.restore(lab.session, "clean", stack="dcn1", hv=lab.hv)


def test_restore_refuses_a_node_whose_disks_changed(lab):
    snapshot.create(lab.session, "clean", hv=lab.hv)
    before = definitions(lab)
    lab.relayer({"num_osds": 1})
    with pytest.raises(InputError) as err:
        snapshot.restore(lab.session, "clean", nodes=("oc0-ceph-4",), hv=lab.hv)
    assert "oc0-ceph-4 has other disks now (osd-0, root) than when it was taken" in \
        err.value.message
    assert definitions(lab) == before


# --- live (internal) snapshots -----------------------------------------------------------------


def test_live_snapshot_of_running_nodes_and_its_bookkeeping(lab):
    lab.hv.start_domain("lab-oc0-ceph-4")
    with pytest.raises(InputError, match="not running: oc0-ceph-3"):
        snapshot.create(lab.session, "warm", nodes=("oc0-ceph-4", "oc0-ceph-3"), hv=lab.hv,
                        live=True)
    before = all_sources(lab)
    report = snapshot.create(lab.session, "warm", nodes=("oc0-ceph-4",), hv=lab.hv, live=True)
    assert report.ok and report.nodes["oc0-ceph-4"].steps == ["disk and memory saved"]
    assert lab.hv.internal_snapshots("lab-oc0-ceph-4") == ["labvirt-warm"]
    assert all_sources(lab) == before  # no layer moved, the node never stopped
    assert lab.hv.domain_state("lab-oc0-ceph-4") == "running"
    rec = lab.session.load_state().snapshots["warm"]
    assert rec["kind"] == "live" and rec["nodes"] == ["oc0-ceph-4"]
    assert snapshot.listing(lab.session)[0]["kind"] == "live"

    restored = snapshot.restore(lab.session, "warm", hv=lab.hv, confirm=lambda _: True)
    assert restored.ok and restored.nodes["oc0-ceph-4"].steps == ["reverted, running"]
    assert lab.hv.domain_state("lab-oc0-ceph-4") == "running"

    # overlay operations would strand the internal snapshot: refused, nothing changes
    for op in (lambda: snapshot.create(lab.session, "cold", hv=lab.hv),
               lambda: snapshot.create(lab.session, "cold", stack="dcn0", hv=lab.hv)):
        with pytest.raises(InputError, match=r"oc0-ceph-4 have live snapshots \(warm\)"):
            op()
    assert all_sources(lab) == before
    snapshot.create(lab.session, "cold", stack="dcn1", hv=lab.hv)  # other nodes are free

    snapshot.delete(lab.session, "warm", hv=lab.hv)
    assert lab.hv.internal_snapshots("lab-oc0-ceph-4") == []
    assert snapshot.create(lab.session, "cold2", stack="dcn0", hv=lab.hv).ok


def test_live_snapshots_need_bios_firmware(lab):
    lab.hv.start_domain("lab-oc0-ceph-4")
    lab.relayer({"uefi": True})
    with pytest.raises(InputError, match="--live needs BIOS firmware"):
        snapshot.create(lab.session, "warm", nodes=("oc0-ceph-4",), hv=lab.hv, live=True)
    assert lab.hv.internal_snapshots("lab-oc0-ceph-4") == []


def test_a_live_snapshot_whose_disks_moved_is_refused(lab):
    lab.hv.start_domain("lab-oc0-ceph-4")
    snapshot.create(lab.session, "warm", nodes=("oc0-ceph-4",), hv=lab.hv, live=True)
    # an interrupted overlay operation (by hand here) moved the node to another layer
    state = lab.session.load_state()
    state.snapshots["warm"]["layers"]["oc0-ceph-4"]["root"] = "lab-oc0-ceph-4.s9.qcow2"
    lab.session.store.save(state)
    with pytest.raises(InputError, match="moved to other layers"):
        snapshot.restore(lab.session, "warm", hv=lab.hv, confirm=lambda _: True)
