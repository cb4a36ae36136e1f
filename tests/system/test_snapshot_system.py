"""Lab snapshots on real QEMU guests: markers on the root disk and an OSD disk come back."""

from __future__ import annotations

import json
import signal
import time

import pytest
from systemlab import DomainWatch, wait_until

pytestmark = pytest.mark.system

WRITE = ("echo {v} > /persist/marker && printf '%-16s' {v} | dd of=/dev/vdb bs=16 count=1 "
         "conv=notrunc 2>/dev/null && sync")
READ = "cat /persist/marker; head -c 16 /dev/vdb | tr -d ' '; echo"


def _write(lab, value: str, *nodes: str) -> None:
    lab.run("exec", *nodes, "--", WRITE.format(v=value))


def _read(lab, *nodes: str) -> dict[str, list[str]]:
    rows = json.loads(lab.run("exec", *nodes, "--format", "json", "--", READ).stdout)
    return {r["node"]: r["stdout"].split() for r in rows}


@pytest.fixture(scope="module")
def clean_snapshot(ready_lab):
    """Markers 'clean' on oc0-ceph-3..5, then one lab snapshot `clean` of all ten nodes,
    shared by the tests of this module (each restores what it needs)."""
    _write(ready_lab, "clean", "oc0-ceph-3", "oc0-ceph-4", "oc0-ceph-5")
    created = json.loads(ready_lab.run("snapshot", "create", "clean", "--format", "json",
                                       "--shutdown-timeout", "20").stdout)
    assert created["ok"] and len(created["nodes"]) == 10
    yield ready_lab
    ready_lab.run("snapshot", "delete", "clean", check=False)


def _orphans(lab) -> list[str]:
    """Layers that nothing references or builds on (what an interrupted run leaves)."""
    from labvirt.layers import VolumeNode, unneeded_layers
    from labvirt.ops.snapshot import _referenced
    from labvirt.session import Session
    from labvirt.virt import Hypervisor

    session = Session(list(lab.files), lab.state_dir)
    model = session.lab()
    with Hypervisor(model.uri) as hv:
        obs = hv.observe((model.pool_name,))
        pool = obs.pool(model.pool_name)
        vols = [VolumeNode(v.name, v.path, v.backing) for v in pool.volumes]
        return unneeded_layers(vols, _referenced(model, obs, session.load_state()))


def test_restore_brings_back_root_and_osd_markers(clean_snapshot):
    lab = clean_snapshot
    _write(lab, "dirty", "oc0-ceph-3", "oc0-ceph-4")
    assert _read(lab, "oc0-ceph-3")["oc0-ceph-3"] == ["dirty", "dirty"]
    restored = json.loads(lab.run("snapshot", "restore", "clean", "--yes", "--format",
                                  "json").stdout)
    assert restored["ok"] and len(restored["nodes"]) == 10
    assert all(n["ready_seconds"] is not None for n in restored["nodes"].values())
    assert _read(lab, "oc0-ceph-3", "oc0-ceph-4") == {
        "oc0-ceph-3": ["clean", "clean"], "oc0-ceph-4": ["clean", "clean"]}


def test_restore_of_one_stack_leaves_the_others_alone(clean_snapshot):
    lab = clean_snapshot
    _write(lab, "dirty", "oc0-ceph-3", "oc0-ceph-4")
    lab.run("snapshot", "restore", "clean", "--stack", "dcn0", "--yes")
    assert _read(lab, "oc0-ceph-3", "oc0-ceph-4") == {
        "oc0-ceph-3": ["dirty", "dirty"], "oc0-ceph-4": ["clean", "clean"]}
    # twice in a row works too
    _write(lab, "again", "oc0-ceph-4")
    lab.run("snapshot", "restore", "clean", "oc0-ceph-4", "--yes")
    assert _read(lab, "oc0-ceph-4")["oc0-ceph-4"] == ["clean", "clean"]


def test_restore_needs_confirmation_without_a_terminal(clean_snapshot):
    proc = clean_snapshot.run("snapshot", "restore", "clean", "--stack", "dcn1", check=False,
                              stdin="")
    assert proc.returncode == 2
    assert "needs confirmation" in proc.stderr and "--yes" in proc.stderr


def test_list_and_delete(clean_snapshot):
    lab = clean_snapshot
    lab.run("snapshot", "create", "dcn0-only", "--stack", "dcn0", "--description", "edge")
    rows = {r["name"]: r for r in json.loads(lab.run("snapshot", "list", "--format",
                                                     "json").stdout)}
    assert set(rows) == {"clean", "dcn0-only"}
    assert rows["dcn0-only"]["nodes"] == ["oc0-ceph-4"]
    assert rows["dcn0-only"]["description"] == "edge"
    assert rows["clean"]["stacks"]["oc0-ceph-4"] == ["dcn0", "DistributedComputeHCI"]
    lab.run("snapshot", "delete", "dcn0-only")
    # the layer `dcn0-only` froze is the backing of the running disk: still restorable to clean
    lab.run("snapshot", "restore", "clean", "oc0-ceph-4", "--yes")
    missing = lab.run("snapshot", "restore", "dcn0-only", "--yes", check=False)
    assert missing.returncode == 2 and "no snapshot named 'dcn0-only'" in missing.stderr
    assert _orphans(lab) == []


def test_a_killed_restore_is_finished_by_running_it_again(clean_snapshot):
    lab = clean_snapshot
    nodes = ("oc0-ceph-3", "oc0-ceph-4", "oc0-ceph-5")
    _write(lab, "dirty", *nodes)
    watch = DomainWatch(lab)
    try:
        domains = [f"{lab.name}-{n}" for n in nodes]
        before = {d: watch.domain_id(d) for d in domains}
        proc = lab.popen("snapshot", "restore", "clean", *nodes, "--yes", "--workers", "1",
                         "--no-wait")
        # kill -9 the moment the first node has been stopped for its restore (one worker:
        # the others are still to come), an event seen in-process, not a guess of time
        wait_until(lambda: watch.domain_id(domains[0]) != before[domains[0]],
                   f"{domains[0]} stopped for its restore", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert watch.domain_id(domains[-1]) == before[domains[-1]]  # not reached yet
    finally:
        watch.close()
    lab.run("snapshot", "restore", "clean", *nodes, "--yes")
    assert _read(lab, *nodes) == {n: ["clean", "clean"] for n in nodes}
    assert _orphans(lab) == []
    assert json.loads(lab.run("status", "--format", "json").stdout)[0]["state"] == "running"


def test_live_snapshot_brings_back_disk_and_memory_without_a_reboot(clean_snapshot):
    lab = clean_snapshot
    node = "oc0-ceph-5"
    probe = ("cat /proc/sys/kernel/random/boot_id; cat /persist/marker; cat /tmp/in-memory; "
             "date +%s")
    lab.run("exec", node, "--", "echo live > /persist/marker && echo live > /tmp/in-memory "
                                "&& sync")
    boot_id = _exec_lines(lab, node, probe)[0]
    lab.run("snapshot", "create", "warm", node, "--live")
    taken = time.time()
    try:
        lab.run("exec", node, "--", "echo changed > /persist/marker && echo changed > "
                                    "/tmp/in-memory && sync")
        # A guest clock left as the snapshot froze it would lag by the time since `taken`:
        # let that lag grow past what the check below tolerates, so the check can fail.
        wait_until(lambda: time.time() > taken + 5, "five seconds past the snapshot", every=0.1)
        restored = json.loads(lab.run("snapshot", "restore", "warm", "--yes", "--format",
                                      "json").stdout)
        assert restored["nodes"][node]["steps"] == ["reverted, running", "clock set"]
        asked = time.time()
        after = _exec_lines(lab, node, probe)
        answered = time.time()
        assert after[:3] == [boot_id, "live", "live"]  # same boot, disk and memory back
        # the guest read its clock while the exec ran: within that window (whole seconds,
        # a second of drift either way), however long the machine took to run it
        assert int(asked) - 2 <= int(after[3]) <= answered + 2, (asked, after[3], answered)
        assert asked - taken > (answered - asked) + 4  # a frozen clock would be outside
    finally:
        lab.run("snapshot", "delete", "warm", check=False)


def _exec_lines(lab, node: str, command: str) -> list[str]:
    rows = json.loads(lab.run("exec", node, "--format", "json", "--", command).stdout)
    assert rows[0]["exit_status"] == 0, rows
    return rows[0]["stdout"].split()
