"""Guests that come up ready, on real QEMU: ssh through paramiko with strict host keys,
the right hostname and ctlplane address inside, and Ansible as a real client of our files."""

from __future__ import annotations

import json
import os
import subprocess
import time
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


def test_a_node_that_boots_but_refuses_labvirt_is_named_with_its_console(system_lab):
    """A node that boots but never lets labvirt in: its guest holds the lab's first key,
    while labvirt now holds another. `up` must say it booted and refuses labvirt's key
    (not that it is slow), with the fix and its console, as soon as that is visible.

    Nothing here depends on how fast the guest boots: labvirt's wait ends when the
    console shows the boot finished and ssh refuses the key; 900 s is only a limit."""
    lab = system_lab
    lab.run("up", "--no-wait")
    key = lab.state_dir / lab.name / "id_ed25519"
    key.unlink()
    key.with_name("id_ed25519.pub").unlink()  # the next command makes a different key
    lab.virsh("destroy", f"{lab.name}-oc0-ceph-4")  # so that `up` starts it and waits
    proc = lab.run("up", "--timeout", "900", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "oc0-ceph-4: booted, but refuses labvirt: ssh refuses labvirt's key" in proc.stdout
    assert "fix: give it a fresh seed with the current key: `labvirt up --recreate " \
           "oc0-ceph-4`" in proc.stdout
    assert "console (errors and last lines):" in proc.stdout
    assert "labvirt-tiny: ready oc0-ceph-4" in proc.stdout  # it did boot, as the tail shows
    assert "still booting" not in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "1 changed, 1 failed" not in proc.stdout  # a failed node is not also "changed"
    assert "10 nodes: 0 changed, 1 failed, 9 unchanged" in proc.stdout
    print(proc.stdout)  # shown with -s or on failure: what a user reads
    # the fix the message gives works: a fresh seed with the lab's current key
    fixed = json.loads(lab.run("up", "--recreate", "oc0-ceph-4", "--timeout", "900",
                               "--format", "json").stdout)
    assert fixed["nodes"]["oc0-ceph-4"]["ssh_ready"] is True
    assert fixed["nodes"]["oc0-ceph-4"]["ready_state"] == "ready"


def test_a_node_still_booting_at_the_timeout_is_told_apart(system_lab):
    """A node whose guest is paused right after its start cannot reach the ready point,
    for a reason the test controls: `up` must call it still booting and show its console,
    not blame ssh."""
    lab = system_lab
    lab.run("up", "--no-wait")
    domain = f"{lab.name}-oc0-ceph-4"
    lab.virsh("destroy", domain)
    proc = lab.popen("up", "--timeout", "20", "--format", "json")
    # pause the guest as soon as `up` has started it (an event, not a sleep)
    for _ in range(6000):
        if lab.virsh("domstate", domain).strip() == "running":
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    lab.virsh("suspend", domain)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stdout + stderr
    node = json.loads(stdout)["nodes"]["oc0-ceph-4"]
    assert node["ssh_ready"] is False
    assert node["ready_state"] == "booting", node["ready_error"]
    assert node["ready_error"].startswith("still booting after 20 s: its console has not "
                                          "reached the ready point")
    assert "--timeout 900" in node["ready_error"]
    assert "labvirt-tiny: ready oc0-ceph-4" not in node["ready_error"]
    lab.virsh("resume", domain)


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
