"""Guests that come up ready, on real QEMU: ssh through paramiko with strict host keys,
the right hostname and ctlplane address inside, and Ansible as a real client of our files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from labvirt.keys import host_key
from labvirt.ops import guests
from labvirt.session import Session
from labvirt.sshclient import HostKeyMismatch, run

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


def _session(lab) -> Session:
    return Session(list(lab.files), lab.state_dir)


def test_every_node_answers_with_its_hostname_and_ctlplane_address(ready_lab):
    session = _session(ready_lab)
    lab = session.lab()
    access = guests.lab_access(session, lab)
    for node in lab.nodes:
        result = run(access.target(lab, node),
                     "hostname; id -un; ip -4 -o addr show; sudo -n true && echo sudo-ok")
        lines = result.stdout.splitlines()
        assert result.exit_status == 0, result.stderr
        assert lines[0] == node.hostname
        assert lines[1] == lab.ssh_user
        assert f"inet {node.ctlplane_ip}/24" in result.stdout, result.stdout
        assert lines[-1] == "sudo-ok"


def test_status_shows_every_node_running(ready_lab):
    rows = json.loads(ready_lab.run("status", "--format", "json").stdout)
    assert len(rows) == 10
    assert {r["state"] for r in rows} == {"running"}
    assert all(r["ssh"].startswith("127.0.0.1:") for r in rows)


def test_ansible_raw_reaches_every_node_with_host_key_checking(ready_lab, tmp_path):
    inventory = ready_lab.out_dir / "hypervisor-inventory.yaml"
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_HOME": str(tmp_path),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_FORKS": "10"}
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible"), "-i", str(inventory), "all", "-m", "raw",
         "-a", "hostname"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ["undercloud", *(f"oc0-ceph-{i}" for i in range(6)),
                 *(f"oc0-controller-{i}" for i in range(3))]:
        assert f"{name} | CHANGED | rc=0 >>\n{name}" in proc.stdout, proc.stdout


def test_exec_runs_on_a_stack_and_reports_failures(ready_lab):
    ok = ready_lab.run("exec", "--stack", "central-ceph", "--format", "json", "--", "hostname")
    rows = json.loads(ok.stdout)
    assert [(r["node"], r["exit_status"], r["stdout"].strip()) for r in rows] == [
        (f"oc0-ceph-{i}", 0, f"oc0-ceph-{i}") for i in range(3)]
    bad = ready_lab.run("exec", "oc0-ceph-4", "undercloud", "--", "test", "-e", "/nonexistent",
                        check=False)
    assert bad.returncode == 1
    assert "0 ok, 2 failed: oc0-ceph-4, undercloud" in bad.stdout


def test_a_wrong_host_key_is_refused(ready_lab):
    """Replace the key labvirt expects for one node: the guest's real key no longer
    matches, and labvirt refuses to talk to it (no trust on first use)."""
    session = _session(ready_lab)
    lab = session.lab()
    node = lab.node("oc0-ceph-5")
    key = host_key(session.state_dir, node)
    pub = key.private_path.with_name(key.private_path.name + ".pub")
    saved = (key.private_path.read_text(), pub.read_text())
    key.private_path.unlink()
    pub.unlink()
    try:
        access = guests.lab_access(session, lab)  # generates a different key
        with pytest.raises(HostKeyMismatch) as err:
            run(access.target(lab, node), "hostname")
        assert "not the key labvirt gave it" in err.value.message
        cli = ready_lab.run("ssh", "oc0-ceph-5", "--", "hostname", check=False)
        assert cli.returncode != 0
        assert "refusing to connect" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        key.private_path.write_text(saved[0])
        key.private_path.chmod(0o600)
        pub.write_text(saved[1])
        guests.lab_access(session, lab)  # known_hosts back to the real key
    assert run(guests.lab_access(session, lab).target(lab, node), "hostname").stdout.strip() \
        == "oc0-ceph-5"


def test_console_shows_the_guest_boot(ready_lab):
    out = ready_lab.run("console", "oc0-ceph-4", "--lines", "400").stdout
    assert "labvirt-tiny: ready oc0-ceph-4" in out


def test_a_node_that_is_not_ready_in_time_is_named_with_its_console(system_lab):
    """A node that boots but never lets labvirt in: its guest holds the lab's first key,
    while labvirt now holds another. `up` must name it and show its console, not hang."""
    lab = system_lab
    lab.run("up", "--no-wait")
    lab.virsh("destroy", f"{lab.name}-oc0-ceph-4")
    key = lab.state_dir / lab.name / "id_ed25519"
    key.unlink()
    key.with_name("id_ed25519.pub").unlink()  # the next command makes a different key
    proc = lab.run("up", "--timeout", "25", check=False)
    assert proc.returncode == 1
    assert "oc0-ceph-4: not ssh-ready after 25 s" in proc.stdout
    assert "console (last lines):" in proc.stdout
    assert "labvirt-tiny: ready oc0-ceph-4" in proc.stdout  # it did boot, as the tail shows
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "1 changed, 1 failed" not in proc.stdout  # a failed node is not also "changed"
    assert "10 nodes: 0 changed, 1 failed, 9 unchanged" in proc.stdout


def test_recreate_rebuilds_a_running_node_from_blank_disks(ready_lab):
    node = "oc0-controller-2"
    ready_lab.run("exec", node, "--", "echo before > /persist/marker && sync")
    # its own forward port is busy until the old domain goes: that must not block it
    report = json.loads(ready_lab.run("up", "--recreate", node, "--format", "json").stdout)
    assert report["nodes"][node]["result"] == "recreated"
    assert report["nodes"][node]["ssh_ready"] is True
    assert {r["result"] for h, r in report["nodes"].items() if h != node} == {"unchanged"}
    rows = json.loads(ready_lab.run("exec", node, "--format", "json", "--",
                                    "cat /persist/marker || echo blank").stdout)
    assert rows[0]["stdout"].split()[-1] == "blank"
