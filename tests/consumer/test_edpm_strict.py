"""Strict where the operator is strict: what its admission webhooks (or the API server) would
refuse in the `edpm/` bundle is refused by `labvirt inventory` itself, exit status 2, with the
fix, before any file is written. These need no CRDs: they run everywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_edpm import DEMO, labvirt

from labvirt.errors import InputError
from labvirt.layout.loader import load_layers
from labvirt.layout.spec import read_layout
from labvirt.model import Lab, build_lab
from labvirt.outputs import edpm

pytestmark = pytest.mark.consumer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("steps", "message", "hint"), [
    ((("assign", "dcn2", "oc0-ceph-5", "--role", "Networker"),),
     "stack 'dcn2' has role Networker, which has no EDPM equivalent",
     "hint: give the stack one of those roles (labvirt assign dcn2 oc0-ceph-5 --role Compute)"),
    ((("assign", "central-compute", "oc0-ceph-4", "--role", "ComputeHCI"),),
     "stack 'central-compute' mixes compute and HCI roles (Compute, ComputeHCI)",
     "hint: move oc0-ceph-4 to a stack of its own"),
    ((("assign", "control-plane", "oc0-ceph-3", "--role", "Compute"),),
     "stack 'control-plane' mixes EDPM role Compute (oc0-ceph-3) with Controller",
     "hint: move oc0-ceph-3 to a stack of its own: labvirt assign <stack> oc0-ceph-3 --role "
     "Compute"),
    ((("assign", "Dcn2", "oc0-ceph-5", "--role", "DistributedComputeHCI"),),
     "stack 'Dcn2' would name an OpenStackDataPlaneNodeSet, and Kubernetes names are lower",
     "hint: rename the stack 'dcn2'"),
    ((("assign", "edpm", "oc0-ceph-5", "--role", "DistributedComputeHCI"),),
     "a stack cannot be named 'edpm'", "hint: rename the stack"),
])
def test_refused_at_inventory_time(tmp_path: Path, steps: tuple, message: str,
                                   hint: str) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    for step in steps:
        labvirt(*DEMO, "--state-dir", state, *step)
    proc = labvirt(*DEMO, "--state-dir", state, "inventory", "-o", out, check=2)
    assert proc.stdout == ""
    assert message in proc.stderr, proc.stderr
    assert hint in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "nothing may be written when the bundle is refused"


def test_a_dns_domain_the_netconfig_webhook_refuses(tmp_path: Path) -> None:
    layer = tmp_path / "domain.yml"
    layer.write_text("labvirt:\n  ctlplane:\n    dns_domain: lab1\n")
    proc = labvirt(*DEMO, "-f", layer, "inventory", "-o", tmp_path / "out", check=2)
    assert "refuses the DNS domain 'ctlplane.lab1'" in proc.stderr
    assert "hint: set labvirt.ctlplane.dns_domain" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_single_stack_inventory_has_no_bundle(tmp_path: Path) -> None:
    """`--stack` writes one stack's TripleO files; the bundle covers the whole lab."""
    labvirt(*DEMO, "inventory", "--stack", "dcn0", "-o", tmp_path / "out")
    assert not (tmp_path / "out" / "edpm").exists()


def demo_lab() -> Lab:
    return build_lab(read_layout(load_layers([REPO / "overrides" / "glance-dcn.yml",
                                              REPO / "overrides" / "tiny.yml"])))


def test_the_webhook_rules_on_nodes_the_model_cannot_make_today() -> None:
    """Two rules the lab model already guarantees (one stack per node, an address per node)
    are checked anyway: the bundle must never rely on that silently."""
    lab = demo_lab()
    sites, _ = edpm.plan(lab)
    dcn0, dcn1 = sites[1], sites[2]
    twice = dataclasses.replace(dcn1, nodes=(*dcn1.nodes, dcn0.nodes[0]))
    with pytest.raises(InputError, match="would be in two NodeSets, 'dcn0' and 'dcn1'"):
        edpm.check_sites([dcn0, twice])
    same_ip = dataclasses.replace(dcn1.nodes[0], ctlplane_ip=dcn0.nodes[0].ctlplane_ip)
    with pytest.raises(InputError, match="already exists in another cluster"):
        edpm.check_sites([dcn0, dataclasses.replace(dcn1, nodes=(same_ip,))])
    no_ip = dataclasses.replace(dcn1.nodes[0], ctlplane_ip=None)
    with pytest.raises(InputError, match="requires an IP address as ansibleHost"):
        edpm.check_sites([dataclasses.replace(dcn1, nodes=(no_ip,))])


def test_every_node_has_the_edpm_user() -> None:
    lab = demo_lab()
    assert ("cloud-admin", ()) in lab.extra_users  # the seed adds the lab's key to it
    assert [n for n, _ in lab.extra_users].count("cloud-admin") == 1
