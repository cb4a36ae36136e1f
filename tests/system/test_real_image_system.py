"""A lab on a real distribution: Debian 12 with its own cloud-init (22.4), systemd, OpenSSH,
grub and kernel, built from Debian's packages (tests/system/debian_image.py, cached between
runs), booted by labvirt the way users boot CentOS Stream / RHEL GenericCloud images.

BIOS (SeaBIOS, grub's boot sector): a lab of the undercloud and a ceph node with its OSD
disks. UEFI (OVMF, grub as the removable-media loader, from the same image): the ceph node
alone. Inside each guest, through labvirt's own ssh (host key pinned, strict checking), the
real cloud-init must have finished without errors from labvirt's NoCloud seed: hostname and
fqdn, the lab's user with passwordless sudo, the static ctlplane address (and the ceph node's
default route) on the NIC carrying the MAC labvirt gave it, the host key labvirt pinned, the
root partition grown to the layout's disk size, the OSD disks, a machine-id of its own. Then,
on BIOS, an overlay snapshot of the lab and a restore: the nodes answer again, what was
written before the snapshot is kept and what was written after it is gone.

Every boot of a distribution under TCG costs about a minute and a half of a core, so the
module spends four (two nodes up, both snapshotted and restored: each a reboot; one UEFI
node up). The UEFI lab has no undercloud and no snapshot: its nodes boot the same way after
a restore as after `up`, and the overlay snapshot of UEFI nodes (NVRAM included) is tested
on a base image by test_base_image_system.py.

Nothing is faked. Every wait is labvirt's own (ssh answers and cloud-init is done) or
cloud-init's; the timeouts are limits for a busy 2-core machine running TCG, never a pace.
Skipped only when the Debian mirror cannot be reached (the image cannot be built).
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from pathlib import Path

import pytest
import yaml
from debian_image import DebianImage, MirrorUnreachable, build
from systemlab import POOL_ROOT, URI, SystemLab, free_port_block

from labvirt.model import Lab
from labvirt.ops.guests import lab_access
from labvirt.session import Session

pytestmark = pytest.mark.system

LIMIT = 900  # seconds: labvirt's own default wait for a distribution image under TCG
OSD_BYTES = 1024**3
DISK_GIB = 4

# (805 MB = 768 MiB of guest memory.)
# Runs inside each guest (python3 is there for cloud-init): every fact the test checks, in
# one ssh round trip, as JSON.
PROBE = r"""
import json, os, shutil, socket, subprocess

def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return None

log = read("/var/log/cloud-init.log") or ""
print(json.dumps({
    "hostname": socket.gethostname(),
    "fqdn": sh("hostname", "-f")["out"].strip(),
    "user": sh("id", "-un")["out"].strip(),
    "sudo": sh("sudo", "-n", "id", "-u"),
    "status": sh("cloud-init", "status", "--long"),
    "result": json.loads(read("/run/cloud-init/result.json") or "null"),
    "log_problems": [l for l in log.splitlines() if "[ERROR]" in l or "Traceback" in l
                     or "[CRITICAL]" in l],
    "log_warnings": [l for l in log.splitlines() if "[WARNING]" in l],
    "boot_finished": os.path.exists("/var/lib/cloud/instance/boot-finished"),
    "addr": json.loads(sh("ip", "-j", "addr", "show")["out"]),
    "routes": json.loads(sh("ip", "-j", "-4", "route", "show")["out"]),
    "lsblk": json.loads(sh("lsblk", "-J", "-b", "-d", "-o", "NAME,SIZE,TYPE")["out"]),
    "root_bytes": os.statvfs("/").f_blocks * os.statvfs("/").f_frsize,
    # cloud-init writes the host keys it is given with mode 0600, the public one too
    "host_key": sh("sudo", "-n", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")["out"],
    "machine_id": read("/etc/machine-id"),
    "efi": os.path.isdir("/sys/firmware/efi"),
    "eni": read("/etc/network/interfaces.d/50-cloud-init"),
    "route_command": shutil.which("route"),
    "markers": sorted(n for n in os.listdir("/var/tmp") if n.startswith("labvirt-")),
}))
"""
PROBE_COMMAND = f"echo {base64.b64encode(PROBE.encode()).decode()} | base64 -d | python3 -"


@pytest.fixture(scope="module")
def debian_image() -> DebianImage:
    try:
        image = build()
    except MirrorUnreachable as exc:
        pytest.skip(f"cannot build the Debian 12 image: {exc}")
    print(f"\ndebian image {image.path}: {'cached' if image.cached else 'built'} "
          f"(build took {image.build_seconds:.0f} s), kernel {image.kernel}")
    return image


def _real_image_lab(tmp_path: Path, image: Path, uefi: bool) -> SystemLab:
    """Two files, layered like systemlab.make_lab: the lab, then this test's own identity
    (name, prefix, bridges, port block, pool directory). BIOS: the undercloud and a ceph
    node; UEFI: the ceph node alone (see the module's docstring for why)."""
    name = f"lvr{os.getpid() % 10000:04d}{random.randrange(16**4):04x}"
    vms = [
        {"name": "undercloud", "cpu": 1, "memory": 805, "disksize": DISK_GIB,
         "interfaces": [{"network": "default"}, {}]},
        {"name": "ceph-0", "cpu": 1, "memory": 805, "disksize": DISK_GIB,
         "interfaces": [{}, {}]},
    ]
    layout = {
        "num_osds": 2,
        "uefi": uefi,
        "vms": vms[1:] if uefi else vms,
        "labvirt": {
            "domain_type": "qemu", "boot": "image", "image": str(image), "access": "forward",
            "resize": {"osd_size": "1GiB"},
            "stacks": [{"name": "central-ceph", "role": "CephAll", "nodes": ["oc0-ceph-0"]}],
        },
    }
    if not uefi:
        layout["labvirt"]["networks"] = {"default": {"forward": "isolated"}}
    identity = {
        "vm_prefix": name,
        "labvirt": {"name": name, "uri": URI, "forward_base_port": free_port_block(),
                    "pool_path": str(POOL_ROOT / name)},
    }
    files = [tmp_path / "real-image.yml", tmp_path / "system-layer.yml"]
    files[0].write_text(yaml.safe_dump(layout))
    files[1].write_text(yaml.safe_dump(identity))
    return SystemLab(name, files, tmp_path / "state", tmp_path / "out")


@pytest.fixture(params=["bios", "uefi"])
def real_lab(request, tmp_path, debian_image):
    lab = _real_image_lab(tmp_path, debian_image.path, uefi=request.param == "uefi")
    try:
        yield lab
    finally:
        lab.run("down", "--yes", check=False)


def _exec(lab: SystemLab, node: str, command: str) -> str:
    proc = lab.run("exec", node, "--format", "json", "--", command, check=False, timeout=LIMIT)
    rows = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and rows and rows[0]["exit_status"] == 0, (
        f"`{command[:60]}` on {node}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return rows[0]["stdout"]


def _probe(lab: SystemLab, node: str) -> dict:
    return json.loads(_exec(lab, node, PROBE_COMMAND))


def _nic_with(facts: dict, address: str) -> dict:
    for link in facts["addr"]:
        for a in link.get("addr_info", []):
            if a.get("local") == address:
                return {**link, "this_addr": a}
    raise AssertionError(f"no NIC holds {address}: {json.dumps(facts['addr'], indent=1)}")


def _check_node(model: Lab, access_key: str, node_name: str, facts: dict, uefi: bool,
                problems: list[str]) -> None:
    """Assert every fact of one node, seen from inside it."""
    node = model.node(node_name)
    cp = model.ctlplane
    # cloud-init: finished, from labvirt's seed (not the fallback datasource), no errors
    assert facts["boot_finished"]
    assert facts["status"]["rc"] == 0, facts["status"]
    assert "status: done" in facts["status"]["out"], facts["status"]
    assert "DataSourceNoCloud" in facts["status"]["out"], facts["status"]
    assert facts["result"]["v1"]["errors"] == [], facts["result"]
    assert facts["log_problems"] == [], "\n".join(facts["log_problems"])
    # who it is
    assert facts["hostname"] == node.hostname
    assert facts["fqdn"] == f"{node.hostname}.{cp.dns_domain}"
    assert facts["user"] == model.ssh_user
    assert facts["sudo"] == {"rc": 0, "out": "0\n", "err": ""}, facts["sudo"]
    assert facts["efi"] is uefi
    # the static ctlplane address, on the NIC with the MAC labvirt gave it
    nic = _nic_with(facts, str(node.ctlplane_ip))
    cp_nic = next(n for n in node.nics if n.network == cp.network)
    assert nic["address"] == cp_nic.mac.lower(), nic
    assert nic["this_addr"]["prefixlen"] == cp.cidr.prefixlen
    assert not nic["this_addr"].get("dynamic"), f"a DHCP lease, not static: {nic}"
    assert nic["operstate"] == "UP", nic
    defaults = [r for r in facts["routes"] if r["dst"] == "default"
                and r.get("dev") == nic["ifname"]]
    if node.is_undercloud:
        assert defaults == [], facts["routes"]  # the undercloud is the ctlplane's gateway
    else:
        # labvirt writes `gateway4` for this: a 0.0.0.0/0 route reached Debian's ifupdown as
        # `post-up route add default gw ... || true`, and route(8) is not on the image
        assert [r.get("gateway") for r in defaults] == [str(cp.gateway)], (
            f"no default route via {cp.gateway} on {nic['ifname']}: {facts['routes']}\n"
            f"{facts.get('eni')}")
    # the host key labvirt pinned (the ssh that carried this already checked it)
    assert facts["host_key"].split()[:2] == access_key.split()[:2], facts["host_key"]
    # root grown to the layout's disk (growpart + resize2fs), OSD disks as labvirt made them
    disks = {d["name"]: d["size"] for d in facts["lsblk"]["blockdevices"] if d["type"] == "disk"}
    assert disks == {d.target: d.size_bytes for d in node.disks}, disks
    assert facts["root_bytes"] > (DISK_GIB - 1) * 1024**3, facts["root_bytes"]
    osds = [d for d in node.disks if d.role.startswith("osd-")]
    assert len(osds) == (0 if node.is_undercloud else 2)
    assert all(d.size_bytes == OSD_BYTES for d in osds)


def test_real_debian_image_boots_reads_its_seed_and_snapshots(real_lab, request):
    lab = real_lab
    firmware = request.node.callspec.params["real_lab"]
    uefi = firmware == "uefi"
    expected = ["oc0-ceph-0"] if uefi else ["oc0-ceph-0", "undercloud"]
    t0 = time.monotonic()
    up = json.loads(lab.run("up", "--format", "json", "--timeout", str(LIMIT),
                            timeout=LIMIT + 300).stdout)
    up_seconds = time.monotonic() - t0
    nodes = sorted(up["nodes"])
    assert nodes == expected
    for h in nodes:
        assert up["nodes"][h]["ssh_ready"] is True, up["nodes"][h]
    print(f"\n[{firmware}] up {up_seconds:.0f} s; ready (ssh + cloud-init done) after start: "
          + ", ".join(f"{h} {up['nodes'][h]['ready_seconds']:.0f} s" for h in nodes))

    session = Session(list(lab.files), lab.state_dir)
    model = session.lab()
    access = lab_access(session, model)
    problems: list[str] = []
    facts = {h: _probe(lab, h) for h in nodes}
    for h in nodes:
        _check_node(model, access.host_keys[h].public_line, h, facts[h], uefi, problems)
        for line in facts[h]["log_warnings"]:  # told, not judged: cloud-init's own advice
            print(f"[{firmware}] {h} cloud-init warning: {line}")
    ids = [facts[h]["machine_id"] for h in nodes]
    assert len(set(ids)) == len(ids) and all(i and i.strip() for i in ids), ids

    if not uefi:  # the overlay snapshot, on BIOS (why not UEFI too: the module docstring)
        for h in nodes:
            _exec(lab, h, "touch /var/tmp/labvirt-before && sync")
        t1 = time.monotonic()
        lab.run("snapshot", "create", "clean", "--timeout", str(LIMIT), timeout=2 * LIMIT)
        create_seconds = time.monotonic() - t1
        for h in nodes:
            _exec(lab, h, "touch /var/tmp/labvirt-after && sync")
            assert _probe(lab, h)["markers"] == ["labvirt-after", "labvirt-before"]
        t2 = time.monotonic()
        lab.run("snapshot", "restore", "clean", "--yes", "--timeout", str(LIMIT),
                timeout=2 * LIMIT)
        restore_seconds = time.monotonic() - t2
        for h in nodes:
            after = _probe(lab, h)
            assert after["markers"] == ["labvirt-before"], after["markers"]
            assert after["hostname"] == h
            assert "status: done" in after["status"]["out"], after["status"]
            assert after["log_problems"] == [], "\n".join(after["log_problems"])
            # the same instance: not a first boot again, same identity and host key
            assert after["machine_id"] == facts[h]["machine_id"]
            assert after["host_key"] == facts[h]["host_key"]
        print(f"[{firmware}] snapshot create {create_seconds:.0f} s, "
              f"restore {restore_seconds:.0f} s")
    print(f"[{firmware}] total {time.monotonic() - t0:.0f} s")
    assert problems == []
