"""The demo lab on a real libvirtd with QEMU (TCG): up, converged up, kill -9, down."""

from __future__ import annotations

import json
import signal

import pytest
from systemlab import DomainWatch, wait_until

pytestmark = pytest.mark.system


def _lab_domains(lab) -> dict[str, str]:
    out = lab.virsh("list", "--all", "--name").split()
    names = [n for n in out if n.startswith(f"{lab.name}-")]
    return {n: lab.virsh("domstate", n).strip() for n in names}


def _leftovers(lab) -> list[str]:
    found = [n for n in lab.virsh("list", "--all", "--name").split() if lab.name in n]
    found += [n for n in lab.virsh("net-list", "--all", "--name").split() if lab.name in n]
    found += [n for n in lab.virsh("pool-list", "--all", "--name").split() if lab.name in n]
    return found


def test_demo_lab_up_converged_and_down(system_lab):
    lab = system_lab
    up = lab.run("up", "--no-wait", "--format", "json")
    report = json.loads(up.stdout)
    assert {r["result"] for r in report["nodes"].values()} == {"created and started"}
    doms = _lab_domains(lab)
    assert len(doms) == 10 and set(doms.values()) == {"running"}
    nets = [n for n in lab.virsh("net-list", "--name").split() if n.startswith(lab.name)]
    assert sorted(nets) == [f"{lab.name}-ctlplane", f"{lab.name}-default"]
    # the ctlplane network is isolated: no <forward>, and no host address in forward access
    ctl = lab.virsh("net-dumpxml", f"{lab.name}-ctlplane")
    assert "<forward" not in ctl and "<ip " not in ctl
    vols = lab.virsh("vol-list", "--pool", f"labvirt-{lab.name}").split()
    assert f"{lab.name}-oc0-ceph-4-osd-1.qcow2" in vols
    assert f"{lab.name}-undercloud.qcow2" in vols

    again = lab.run("up", "--no-wait")
    assert "nothing to do (10 nodes unchanged)" in again.stdout

    status = json.loads(lab.run("status", "--format", "json").stdout)
    assert {r["state"] for r in status} == {"running"}
    assert {r["node"]: r["stack"] for r in status}["oc0-ceph-4"] == "dcn0"

    lab.run("down", "--yes")
    assert _leftovers(lab) == []


def test_up_killed_midway_is_finished_by_a_second_up(system_lab):
    lab = system_lab
    watch = DomainWatch(lab)
    try:
        proc = lab.popen("up", "--no-wait", "--workers", "1")
        # kill -9 the moment the third domain exists (one worker: seven are still to come)
        wait_until(lambda: len(watch.domains()) >= 3, "three domains defined", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        watch.close()
    partial = _lab_domains(lab)
    assert 0 < len(partial) < 10, partial

    lab.run("up", "--no-wait")
    doms = _lab_domains(lab)
    assert len(doms) == 10 and set(doms.values()) == {"running"}
    assert "nothing to do" in lab.run("up", "--no-wait").stdout

    lab.run("down", "--yes")
    assert _leftovers(lab) == []


def test_down_after_a_killed_up_leaves_nothing(system_lab):
    lab = system_lab
    watch = DomainWatch(lab)
    try:
        proc = lab.popen("up", "--no-wait", "--workers", "1")
        wait_until(lambda: len(watch.domains()) >= 2, "two domains defined", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        watch.close()
    lab.run("down", "--yes")
    assert _leftovers(lab) == []
