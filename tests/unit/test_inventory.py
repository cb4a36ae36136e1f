"""`labvirt inventory` checked by real consumers: ansible-inventory parses every inventory,
`ssh -G` reads the ssh_config; the demo lab's whole output directory and `labvirt show` of
the demo and default labs are golden files (LABVIRT_REGEN_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from clitools import BIN, DEMO, NO_STATE, REGEN, REPO, golden, invoke, labvirt

from labvirt.resources import default_layout

pytestmark = pytest.mark.unit

GOLDEN = REPO / "tests" / "golden"
DEMO_ABS = tuple(str(REPO / a) if a.endswith(".yml") else a for a in DEMO)  # for invoke()
STACKS = {
    "central-ceph": ("CephAll", ["oc0-ceph-0", "oc0-ceph-1", "oc0-ceph-2"]),
    "control-plane": ("Controller", ["oc0-controller-0", "oc0-controller-1", "oc0-controller-2"]),
    "central-compute": ("Compute", ["oc0-ceph-3"]),
    "dcn0": ("DistributedComputeHCI", ["oc0-ceph-4"]),
    "dcn1": ("DistributedComputeHCI", ["oc0-ceph-5"]),
}
TRIPLEO_INVENTORY = "tripleo-ansible-inventory.yaml"
# every stack's control-plane VIP: free ctlplane addresses from the top, in layout order
VIPS = {s: f"192.168.24.{253 - i}" for i, s in enumerate(STACKS)}  # .254: the host
# ctlplane addresses of both labs: from first_ip .30, in layout order
IPS = {h: f"192.168.24.{30 + i}" for i, h in enumerate(
    [f"oc0-controller-{i}" for i in range(3)] + [f"oc0-ceph-{i}" for i in range(6)])}


def write_inventory(out: Path, *layout: str, cwd: Path = REPO) -> None:
    # The state root is a fixed path that does not exist: ssh_config and the hypervisor
    # inventory name files under it, and the golden files must not depend on the machine.
    assert not NO_STATE.exists()
    labvirt(*layout, "--state-dir", NO_STATE, "inventory", "-o", out, cwd=cwd)
    assert not NO_STATE.exists(), "inventory only reads the state: it must not create it"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The inventory directories of the demo lab and of the embedded default lab."""
    demo = tmp_path_factory.mktemp("demo") / "out"
    write_inventory(demo, *DEMO)
    default = tmp_path_factory.mktemp("default") / "out"
    write_inventory(default, cwd=default.parent)  # no -f, no ./overrides.yml: the default
    return {"demo": demo, "default": default}


def inventory_files(out: Path) -> list[Path]:
    return sorted([*out.glob(f"*/overcloud-deploy/*/{TRIPLEO_INVENTORY}"), out / "inventory.yaml",
                   out / "hypervisor-inventory.yaml"])

def ansible_inventory(path: Path, home: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_CONFIG": str(home / "none.cfg"),  # no ansible.cfg from anywhere
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ENABLED": "yaml",  # the YAML plugin, not a lucky fallback
        "ANSIBLE_NOCOLOR": "1",
    })
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
                          cwd=home, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"ansible-inventory -i {path}:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def parsed(outputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[tuple[str, str], dict[str, Any]]:
    """(lab, path relative to its output dir) -> `ansible-inventory --list` of that file.
    Files with the same bytes are parsed once (the two labs share most of them)."""
    home = tmp_path_factory.mktemp("ansible")
    files = {(lab, str(f.relative_to(out))): f for lab, out in outputs.items()
             for f in inventory_files(out)}
    by_digest = {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in files.values()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        lists = dict(zip(by_digest, pool.map(lambda f: ansible_inventory(f, home),
                                             by_digest.values()), strict=True))
    return {key: lists[hashlib.sha256(f.read_bytes()).hexdigest()] for key, f in files.items()}


def children(inv: dict[str, Any], group: str) -> list[str]:
    return inv[group].get("children", [])


def hosts(inv: dict[str, Any], group: str) -> list[str]:
    return inv.get(group, {}).get("hosts", [])


# --- what is written ----------------------------------------------------------------------

def stack_files(stack: str) -> list[str]:
    """What a stack's bundle holds in the demo (and default) lab."""
    role = STACKS[stack][0]
    files = ["baremetal-deployment.yaml", "deployed-server-environment.yaml",
             "roles_data.yaml", f"overcloud-deploy/{stack}/{TRIPLEO_INVENTORY}"]
    if role in ("Controller", "Compute"):
        files.append("external-ceph.yaml")
    if role == "Controller":
        files += ["glance-default-store.yaml", "glance-edge-stores.yaml"]
    if role == "DistributedComputeHCI":
        files += ["availability-zone.yaml", "glance-central-store.yaml"]
    return [f"{stack}/{f}" for f in files]


def test_every_stack_gets_its_files(outputs: dict[str, Path]) -> None:
    for out in outputs.values():
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        per_stack = [f for s in STACKS for f in stack_files(s)]
        edpm = [f"edpm/{f}" for f in ("README.md", "deployments.yaml", "kustomization.yaml",
                                      "netconfig.yaml", "nodesets.yaml", "ssh-key-secret.sh")]
        assert written == sorted([*per_stack, *edpm, "hosts", "hypervisor-inventory.yaml",
                                  "inventory.yaml", "deploy-order.sh", "ssh_config"])

def test_golden_inventory_demo(outputs: dict[str, Path]) -> None:
    out, gold = outputs["demo"], GOLDEN / "inventory" / "demo"
    written = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    if REGEN and gold.exists():
        shutil.rmtree(gold)
    for rel in sorted(written):
        golden(gold / rel, (out / rel).read_text())
    assert {p.relative_to(gold) for p in gold.rglob("*") if p.is_file()} == written


@pytest.mark.parametrize("lab", ["demo", "default"])
def test_golden_show_json(lab: str, tmp_path: Path) -> None:
    if lab == "demo":
        proc = labvirt(*DEMO, "--state-dir", NO_STATE, "show", "--format", "json")
    else:
        proc = labvirt("--state-dir", NO_STATE, "show", "--format", "json", cwd=tmp_path)
    data = json.loads(proc.stdout)
    if lab == "default":
        # the embedded file's path depends on where labvirt is installed
        assert data["lab"]["sources"] == [str(default_layout())]
        data["lab"]["sources"] = ["<embedded>/glance-dcn.yml"]
    golden(GOLDEN / "show" / f"{lab}.json", json.dumps(data, indent=2) + "\n")
    assert not NO_STATE.exists()


# --- TripleO-shaped inventories, as ansible-inventory reads them --------------------------
# (tests/consumer/test_tripleo_bundle.py checks them against tripleo-common's own code)

def inv_path(stack: str) -> str:
    return f"{stack}/overcloud-deploy/{stack}/{TRIPLEO_INVENTORY}"


@pytest.mark.parametrize("lab", ["demo", "default"])
@pytest.mark.parametrize("stack", list(STACKS))
def test_stack_inventory(parsed: dict, lab: str, stack: str) -> None:
    role, nodes = STACKS[stack]
    inv = parsed[(lab, inv_path(stack))]
    assert hosts(inv, f"{stack}_{role}") == nodes
    assert children(inv, role) == [f"{stack}_{role}"]
    assert hosts(inv, "Undercloud") == ["undercloud"]
    # TripleO's nesting: allovercloud -> <stack>_allovercloud -> <stack>_<stack> -> roles
    assert children(inv, "allovercloud") == [f"{stack}_allovercloud"]
    assert children(inv, f"{stack}_allovercloud") == [f"{stack}_{stack}"]
    assert children(inv, f"{stack}_{stack}") == [f"{stack}_{role}"]
    assert children(inv, stack) == [f"{stack}_allovercloud"]
    assert "overcloud" not in inv
    assert set(inv["_meta"]["hostvars"]) == {"undercloud", *nodes}
    for host in nodes:
        hv = inv["_meta"]["hostvars"][host]
        assert {k: hv[k] for k in ("ansible_host", "ctlplane_ip", "ctlplane_hostname",
                                   "canonical_hostname", "ansible_ssh_user", "tripleo_role_name",
                                   "tripleo_role_networks", "serial")} == {
            "ansible_host": IPS[host],
            "ctlplane_ip": IPS[host],
            "ctlplane_hostname": f"{host}.ctlplane.localdomain",
            "canonical_hostname": f"{host}.localdomain",
            "ansible_ssh_user": "tripleo-admin",
            "tripleo_role_name": role,
            "tripleo_role_networks": ["ctlplane"],
            "serial": 1,
        }
        assert hv["container_cli"] == "podman"
        assert hv["ctlplane_vip"] == hv["redis_vip"] == VIPS[stack]
    undercloud = inv["_meta"]["hostvars"]["undercloud"]
    assert (undercloud["plan"], undercloud["plans"]) == (stack, [stack])
    assert undercloud["ansible_connection"] == "local"


def test_service_groups(parsed: dict) -> None:
    dcn0 = parsed[("demo", inv_path("dcn0"))]
    for service in ("ceph_osd", "ceph_mon", "nova_compute", "cinder_volume", "etcd"):
        assert children(dcn0, service) == [f"dcn0_{service}"], service
        assert children(dcn0, f"dcn0_{service}") == ["dcn0_DistributedComputeHCI"]
    assert children(dcn0, "osds") == ["dcn0_osds"]  # ceph-ansible's name, as TripleO adds
    control = parsed[("demo", inv_path("control-plane"))]
    assert children(control, "control-plane_glance_api") == ["control-plane_Controller"]
    assert "ceph_osd" not in control


def test_dcn0_inventory(parsed: dict) -> None:
    inv = parsed[("demo", inv_path("dcn0"))]
    assert hosts(inv, "dcn0_DistributedComputeHCI") == ["oc0-ceph-4"]
    ceph4 = inv["_meta"]["hostvars"]["oc0-ceph-4"]
    assert ceph4["ansible_host"] == "192.168.24.37"
    assert ceph4["tripleo_role_name"] == "DistributedComputeHCI"
    assert {"DistributedComputeHCI", "Undercloud", "all", "allovercloud", "dcn0",
            "dcn0_allovercloud", "dcn0_dcn0", "dcn0_DistributedComputeHCI",
            "dcn0_osds"} <= set(inv)


@pytest.mark.parametrize("lab", ["demo", "default"])
def test_merged_inventory(parsed: dict, lab: str) -> None:
    inv = parsed[(lab, "inventory.yaml")]
    assert children(inv, "DistributedComputeHCI") == [
        "dcn0_DistributedComputeHCI", "dcn1_DistributedComputeHCI"]
    assert children(inv, "CephAll") == ["central-ceph_CephAll"]
    assert children(inv, "Compute") == ["central-compute_Compute"]
    assert children(inv, "Controller") == ["control-plane_Controller"]
    for stack, (role, nodes) in STACKS.items():
        assert hosts(inv, f"{stack}_{role}") == nodes
        assert children(inv, f"{stack}_allovercloud") == [f"{stack}_{stack}"]
        assert children(inv, f"{stack}_{stack}") == [f"{stack}_{role}"]
        assert children(inv, stack) == [f"{stack}_allovercloud"]
    assert children(inv, "allovercloud") == sorted(f"{s}_allovercloud" for s in STACKS)
    assert "overcloud" not in inv
    assert children(inv, "ceph_osd") == sorted(
        f"{s}_ceph_osd" for s in ("central-ceph", "dcn0", "dcn1"))
    undercloud = inv["_meta"]["hostvars"]["undercloud"]
    assert undercloud["plans"] == sorted(STACKS)
    assert "plan" not in undercloud
    hostvars = inv["_meta"]["hostvars"]
    assert set(hostvars) == {"undercloud", *IPS}
    assert hostvars["oc0-ceph-5"]["tripleo_role_name"] == "DistributedComputeHCI"
    assert hostvars["oc0-ceph-3"]["ansible_host"] == IPS["oc0-ceph-3"]

@pytest.mark.parametrize(("lab", "address"), [("demo", "127.0.0.1"), ("default", None)])
def test_hypervisor_inventory(parsed: dict, lab: str, address: str | None) -> None:
    inv = parsed[(lab, "hypervisor-inventory.yaml")]
    hostvars = inv["_meta"]["hostvars"]
    assert set(hostvars) == {"undercloud", *IPS}
    for stack, (_, nodes) in STACKS.items():
        assert hosts(inv, stack) == nodes
    assert "unassigned" not in inv
    ceph4 = hostvars["oc0-ceph-4"]
    assert ceph4["ansible_host"] == (address or IPS["oc0-ceph-4"])
    assert ceph4["ansible_user"] == "tripleo-admin"
    assert ceph4["ansible_ssh_private_key_file"] == f"{NO_STATE}/glance-dcn/id_ed25519"
    assert "StrictHostKeyChecking=yes" in ceph4["ansible_ssh_common_args"]
    if lab == "demo":  # reached through per-node port forwards on the loopback
        ports = [hostvars[h]["ansible_port"] for h in hostvars]
        assert len(set(ports)) == len(ports)
    else:
        assert ceph4["ansible_port"] == 22


# --- TripleO's files ----------------------------------------------------------------------
# (the consumer tier runs tripleo-ansible's provisioning chain on them)

def load(out: Path, rel: str) -> Any:
    return yaml.safe_load((out / rel).read_text())


def test_deployed_server_environment_dcn0(outputs: dict[str, Path]) -> None:
    text = (outputs["demo"] / "dcn0/deployed-server-environment.yaml").read_text()
    assert text.splitlines()[1].startswith("# Path B: openstack overcloud deploy --stack dcn0 ")
    env = yaml.safe_load(text)
    params = env["parameter_defaults"]
    assert params["DistributedComputeHCICount"] == 1
    assert params["DistributedComputeHCIHostnameFormat"] == (
        "%stackname%-distributedcomputehci-%index%")
    assert params["HostnameMap"] == {"dcn0-distributedcomputehci-0": "oc0-ceph-4"}
    assert params["DeployedServerPortMap"] == {"oc0-ceph-4-ctlplane": {
        "fixed_ips": [{"ip_address": "192.168.24.37"}],
        "subnets": [{"cidr": "192.168.24.0/24"}],
        "network": {"tags": ["192.168.24.0/24"]},
    }}
    assert params["NodePortMap"] == {"oc0-ceph-4": {"ctlplane": {
        "ip_address": "192.168.24.37", "ip_address_uri": "192.168.24.37",
        "ip_subnet": "192.168.24.37/24"}}}
    assert params["ControlPlaneVipData"] == {
        "fixed_ips": [{"ip_address": VIPS["dcn0"]}], "name": "control_virtual_ip",
        "network": {"tags": ["192.168.24.0/24"]}, "subnets": [{"ip_version": 4}]}
    attrs = params["CtlplaneNetworkAttributes"]
    assert attrs["network"] == {"dns_domain": "ctlplane.localdomain.", "mtu": 1500,
                                "name": "ctlplane", "tags": ["192.168.24.0/24"]}
    assert attrs["subnets"]["ctlplane-subnet"] == {
        "cidr": "192.168.24.0/24", "dns_nameservers": ["192.168.24.1"],
        "gateway_ip": "192.168.24.1", "host_routes": [], "ip_version": 4,
        "name": "ctlplane-subnet"}
    assert params["ControlPlaneDefaultRoute"] == "192.168.24.1"
    assert params["EC2MetadataIp"] == "192.168.24.1"
    tht = "/usr/share/openstack-tripleo-heat-templates"
    assert env["resource_registry"] == {
        "OS::TripleO::DeployedServer::ControlPlanePort":
            f"{tht}/deployed-server/deployed-neutron-port.yaml",
        "OS::TripleO::Network::Ports::ControlPlaneVipPort":
            f"{tht}/network/ports/deployed_vip_ctlplane.yaml"}


def test_control_plane_vips_are_free_and_distinct(outputs: dict[str, Path]) -> None:
    vips = [load(outputs["demo"], f"{s}/deployed-server-environment.yaml")["parameter_defaults"]
            ["ControlPlaneVipData"]["fixed_ips"][0]["ip_address"] for s in STACKS]
    assert vips == [VIPS[s] for s in STACKS]
    assert len(set(vips)) == len(vips)
    assert not set(vips) & {*IPS.values(), "192.168.24.1", "192.168.24.255"}


def test_deployed_server_environment_names(outputs: dict[str, Path]) -> None:
    compute = load(outputs["demo"], "central-compute/deployed-server-environment.yaml")
    params = compute["parameter_defaults"]
    assert params["ComputeHostnameFormat"] == "%stackname%-novacompute-%index%"
    assert params["HostnameMap"] == {"central-compute-novacompute-0": "oc0-ceph-3"}
    control = load(outputs["demo"], "control-plane/deployed-server-environment.yaml")
    params = control["parameter_defaults"]
    assert params["ControllerCount"] == 3
    assert params["ControllerHostnameFormat"] == "%stackname%-controller-%index%"
    assert params["HostnameMap"] == {f"control-plane-controller-{i}": f"oc0-controller-{i}"
                                     for i in range(3)}
    assert list(params["DeployedServerPortMap"]) == [
        f"oc0-controller-{i}-ctlplane" for i in range(3)]
    for i in range(3):
        port = params["DeployedServerPortMap"][f"oc0-controller-{i}-ctlplane"]
        assert port["fixed_ips"] == [{"ip_address": IPS[f"oc0-controller-{i}"]}]


def test_baremetal_deployment(outputs: dict[str, Path]) -> None:
    text = (outputs["demo"] / "dcn0/baremetal-deployment.yaml").read_text()
    assert text.splitlines()[1].startswith("# Path A: openstack overcloud deploy --stack dcn0 ")
    assert "do NOT also pass dcn0/deployed-server-environment.yaml" in text
    assert yaml.safe_load(text) == [{
        "name": "DistributedComputeHCI",
        "count": 1,
        "hostname_format": "%stackname%-distributedcomputehci-%index%",
        "instances": [{
            "hostname": "oc0-ceph-4", "name": "oc0-ceph-4", "managed": False,
            "networks": [{"network": "ctlplane", "fixed_ip": "192.168.24.37"}],
        }],
    }]
    ceph = load(outputs["demo"], "central-ceph/baremetal-deployment.yaml")
    assert [(r["name"], r["count"]) for r in ceph] == [("CephAll", 3)]
    assert all(i["managed"] is False for i in ceph[0]["instances"])
    assert [i["networks"][0]["fixed_ip"] for i in ceph[0]["instances"]] == [
        IPS[f"oc0-ceph-{i}"] for i in range(3)]


@pytest.mark.parametrize("stack", list(STACKS))
def test_roles_file_has_exactly_the_stacks_roles(outputs: dict[str, Path], stack: str) -> None:
    roles = load(outputs["demo"], f"{stack}/roles_data.yaml")
    assert [r["name"] for r in roles] == [STACKS[stack][0]]
    assert roles[0]["ServicesDefault"]  # THT's definition, not a stub


def test_edge_availability_zones(outputs: dict[str, Path]) -> None:
    for stack in ("dcn0", "dcn1"):
        params = load(outputs["demo"], f"{stack}/availability-zone.yaml")["parameter_defaults"]
        assert params["NovaComputeAvailabilityZone"] == stack
        assert params["CinderStorageAvailabilityZone"] == stack
        assert params["NovaCrossAZAttach"] is False
    stores = load(outputs["demo"], "control-plane/glance-edge-stores.yaml")["parameter_defaults"]
    assert list(stores["GlanceMultistoreConfig"]) == ["dcn0", "dcn1"]


# --- the deploy order ---------------------------------------------------------------------

def order_commands(out: Path) -> list[list[str]]:
    """deploy-order.sh as argument lists, variables expanded to placeholders."""
    text = (out / "deploy-order.sh").read_text()
    body = text.split("\nEOF\n}\n", 1)[1]  # after the helper functions
    joined = body.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines()
            if line.strip() and not line.startswith("#")]


def check_order(out: Path) -> list[tuple[str, str]]:
    """Every $BUNDLE file the commands name exists in the bundle, every working-directory
    file is written by an earlier command before it is read; returns (command, stack)."""
    produced: set[str] = set()
    done = []
    for argv in order_commands(out):
        outputs_of = set()
        for i, arg in enumerate(argv):
            if arg.startswith("$BUNDLE/"):
                assert (out / arg.removeprefix("$BUNDLE/")).is_file(), (arg, argv)
            if arg.startswith("$HOME/overcloud-deploy/"):
                is_output = (argv[i - 1] in ("--output", "--output-file")
                             or (argv[0] == "ceph_client_env" and i == 2))
                if is_output:
                    outputs_of.add(arg)
                else:
                    assert arg in produced, f"{arg} is read before anything writes it: {argv}"
        produced |= outputs_of
        stack = argv[argv.index("--stack") + 1] if "--stack" in argv else "-"
        what = " ".join(argv[:4]) if argv[0] == "openstack" else argv[0]
        done.append((what, stack))
    return done


def test_deploy_order_demo(outputs: dict[str, Path]) -> None:
    deploys = [s for what, s in check_order(outputs["demo"])
               if what == "openstack overcloud deploy --templates"]
    assert deploys == ["central-ceph", "control-plane", "central-compute", "dcn0", "dcn1",
                       "control-plane"]
    ceph = [s for what, s in check_order(outputs["demo"])
            if what == "openstack overcloud ceph deploy"]
    assert ceph == ["central-ceph", "dcn0", "dcn1"]
    proc = subprocess.run(["bash", "-n", str(outputs["demo"] / "deploy-order.sh")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_deploy_order_follows_the_assignment(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    labvirt(*DEMO, "--state-dir", state, "assign", "dcn2", "oc0-ceph-3",
            "--role", "DistributedComputeHCI")
    labvirt(*DEMO, "--state-dir", state, "inventory", "-o", out)
    steps = check_order(out)
    deploys = [s for what, s in steps if what == "openstack overcloud deploy --templates"]
    assert deploys == ["central-ceph", "control-plane", "dcn0", "dcn1", "dcn2", "control-plane"]
    assert not (out / "central-compute").exists()
    assert (out / "dcn2" / "availability-zone.yaml").is_file()
    stores = load(out, "control-plane/glance-edge-stores.yaml")["parameter_defaults"]
    assert list(stores["GlanceMultistoreConfig"]) == ["dcn0", "dcn1", "dcn2"]
    text = (out / "deploy-order.sh").read_text()
    assert "\"$HOME/overcloud-deploy/dcn2/ceph-export.yaml\" dcn2" in text


def test_a_role_tht_does_not_define_is_an_input_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    labvirt(*DEMO, "--state-dir", state, "assign", "dcn0", "oc0-ceph-4", "--role", "EdgeHCI")
    proc = labvirt(*DEMO, "--state-dir", state, "inventory", "-o", tmp_path / "out", check=2)
    assert proc.stdout == ""
    assert proc.stderr.startswith(
        "error: stack 'dcn0': role 'EdgeHCI' has no definition in tripleo-heat-templates "
        "14.3.0 (roles/EdgeHCI.yaml)\n  hint: use one of: BlockStorage, ")
    assert "DistributedComputeHCI" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()

# --- reaching the nodes from the hypervisor -----------------------------------------------

def test_hosts_file(outputs: dict[str, Path]) -> None:
    lines = (outputs["demo"] / "hosts").read_text().splitlines()
    assert lines[0].startswith("# ")
    assert lines[1:] == ["192.168.24.1 undercloud.localdomain undercloud"] + [
        f"{ip} {h}.localdomain {h}" for h, ip in IPS.items()]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="openssh-client is not installed")
@pytest.mark.parametrize(("lab", "hostname", "port"), [
    ("demo", "127.0.0.1", None), ("default", "192.168.24.37", "22")])
def test_ssh_config_parses(outputs: dict[str, Path], tmp_path: Path, lab: str, hostname: str,
                           port: str | None) -> None:
    # ssh -G only prints the configuration it resolved: it connects to nothing
    proc = subprocess.run(["ssh", "-G", "-F", str(outputs[lab] / "ssh_config"), "oc0-ceph-4"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
                          cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    conf: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        conf.setdefault(key.lower(), []).append(value)
    assert conf["hostname"] == [hostname]
    assert conf["user"] == ["tripleo-admin"]
    assert conf["identityfile"] == [f"{NO_STATE}/glance-dcn/id_ed25519"]
    assert conf["userknownhostsfile"] == [f"{NO_STATE}/glance-dcn/known_hosts"]
    assert conf["hostkeyalias"] == ["oc0-ceph-4"]
    assert conf["stricthostkeychecking"] == ["true"]
    assert conf["identitiesonly"] == ["yes"]
    if port is None:  # the forward port: the one the model gave this node
        show = json.loads(invoke(*DEMO_ABS, "show", "--format", "json").stdout)
        port = str(next(n["ssh"]["port"] for n in show["nodes"] if n["hostname"] == "oc0-ceph-4"))
    assert conf["port"] == [port]


# --- options ------------------------------------------------------------------------------

def test_one_stack_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    invoke(*DEMO_ABS, "--state-dir", tmp_path / "state", "inventory", "--stack", "dcn1", "-o", out,
           "--format", "json")
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([*stack_files("dcn1"), "hosts", "hypervisor-inventory.yaml",
                              "ssh_config"])
    assert not (tmp_path / "state").exists()


def test_unknown_stack_is_an_input_error(tmp_path: Path) -> None:
    proc = invoke(*DEMO_ABS, "inventory", "--stack", "dcn3", "-o", tmp_path / "out", check=2)
    assert re.fullmatch(r"error: unknown stack 'dcn3'\n  hint: did you mean 'dcn[01]'\?\n",
                        proc.stderr), proc.stderr
    assert not (tmp_path / "out").exists()


def test_inventory_json_lists_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = invoke(*DEMO_ABS, "inventory", "-o", out, "--format", "json")
    listed = json.loads(proc.stdout)
    assert {Path(w["path"]) for w in listed} == {p for p in out.rglob("*") if p.is_file()}
    assert {w["stack"] for w in listed} == {*STACKS, None}


def test_a_stack_that_lost_its_nodes_leaves_no_deployable_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    state = tmp_path / "state"
    labvirt(*DEMO, "--state-dir", state, "inventory", "-o", out)
    assert (out / "dcn0" / "deployed-server-environment.yaml").exists()
    (out / "notes").mkdir()
    (out / "notes" / "inventory.yaml").write_text("# mine\n")
    (out / "mine" / "overcloud-deploy").mkdir(parents=True)  # not ours, however deep
    (out / "mine" / "overcloud-deploy" / TRIPLEO_INVENTORY).write_text("# mine\n")
    labvirt(*DEMO, "--state-dir", state, "assign", "central-compute", "oc0-ceph-4")
    proc = labvirt(*DEMO, "--state-dir", state, "inventory", "-o", out, "--format", "json")
    removed = [w for w in json.loads(proc.stdout) if w["what"].startswith("removed")]
    assert [(Path(w["path"]).name, w["stack"]) for w in removed] == [("dcn0", "dcn0")]
    assert not (out / "dcn0").exists()
    assert (out / "notes" / "inventory.yaml").read_text() == "# mine\n"  # not ours: kept
    assert (out / "mine" / "overcloud-deploy" / TRIPLEO_INVENTORY).read_text() == "# mine\n"
    env = yaml.safe_load((out / "central-compute" / "deployed-server-environment.yaml")
                         .read_text())["parameter_defaults"]
    assert env["HostnameMap"] == {"central-compute-novacompute-0": "oc0-ceph-3",
                                  "central-compute-novacompute-1": "oc0-ceph-4"}


@pytest.mark.skipif(shutil.which("ssh") is None, reason="openssh-client is not installed")
def test_ssh_config_survives_a_state_dir_with_spaces(tmp_path: Path) -> None:
    state = tmp_path / "my labs" / "state dir"
    out = tmp_path / "out"
    labvirt(*DEMO, "--state-dir", state, "inventory", "-o", out)
    proc = subprocess.run(["ssh", "-G", "-F", str(out / "ssh_config"), "oc0-ceph-4"],
                          capture_output=True, text=True, check=True)
    options = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert options["identityfile"] == str(state / "glance-dcn" / "id_ed25519")
    assert options["userknownhostsfile"] == str(state / "glance-dcn" / "known_hosts")
    inv = yaml.safe_load((out / "hypervisor-inventory.yaml").read_text())
    args = inv["all"]["hosts"]["oc0-ceph-4"]["ansible_ssh_common_args"]
    assert f"-o UserKnownHostsFile='{state / 'glance-dcn' / 'known_hosts'}'" in args


def test_stale_clean_up_never_follows_a_symlink_out_of_the_directory(tmp_path: Path) -> None:
    """Another inventory's stale-looking stack outside DIR, reached through a link inside
    DIR (a link to the directory, and a link to one of its files): both are left alone."""
    other, out = tmp_path / "other", tmp_path / "out"
    invoke(*DEMO_ABS, "inventory", "-o", other)
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    invoke(*DEMO_ABS, "inventory", "-o", out)
    (out / "old-dcn").symlink_to(other / "dcn0", target_is_directory=True)
    (out / "old-dcn1").mkdir()
    (out / "old-dcn1" / "roles_data.yaml").symlink_to(other / "dcn1" / "roles_data.yaml")
    proc = invoke(*DEMO_ABS, "inventory", "-o", out, "--format", "json")
    assert not [w for w in json.loads(proc.stdout) if w["what"].startswith("removed")]
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before
    assert (out / "old-dcn").is_symlink() and (out / "old-dcn1" / "roles_data.yaml").is_symlink()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "link" if p.is_symlink() else "dir" if p.is_dir()
            else p.read_text() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("case", "message"), [
    ("a file", "is a file, not a directory"),
    ("a loop", "cannot be used: Too many levels of symbolic links"),
    ("hosts a directory", "hosts is a directory, where labvirt writes a file"),
    ("a stack a link", "dcn0 is a symbolic link, where labvirt writes a directory"),
    ("a file a link", "dcn0/roles_data.yaml is a symbolic link, where labvirt writes a file"),
    ("parent a file", "is a file, not a directory"),
])
def test_output_dir_problems_are_refused_before_anything_is_written(
        tmp_path: Path, case: str, message: str) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "roles_data.yaml").write_text("mine\n")
    target = out
    if case == "a file":
        out.write_text("mine\n")
    elif case == "a loop":
        out.symlink_to(tmp_path / "loop")
        (tmp_path / "loop").symlink_to(out)
    elif case == "parent a file":
        out.write_text("mine\n")
        target = out / "sub"
    else:
        out.mkdir()
        if case == "hosts a directory":
            (out / "hosts").mkdir()
        elif case == "a stack a link":
            (out / "dcn0").symlink_to(outside, target_is_directory=True)
        else:
            (out / "dcn0").mkdir()
            (out / "dcn0" / "roles_data.yaml").symlink_to(outside / "roles_data.yaml")
    before = _tree(tmp_path)
    proc = invoke(*DEMO_ABS, "inventory", "-o", target, check=2)
    assert proc.stderr.startswith("error: cannot write the inventory: "), proc.stderr
    assert message in proc.stderr and "\n  hint: " in proc.stderr
    assert proc.stdout == ""
    assert _tree(tmp_path) == before  # nothing written, nothing removed, nothing followed


def test_a_stack_name_from_the_state_cannot_leave_the_output_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = state / "glance-dcn" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "stacks": {"../../escaped": {"role": "Compute"}},
                                "assignments": {"oc0-ceph-4": {"stack": "../../escaped"}}}))
    out = tmp_path / "a" / "b" / "out"
    proc = invoke(*DEMO_ABS, "--state-dir", state, "inventory", "-o", out, check=2)
    assert proc.stderr.startswith(f"error: the lab state {path} is damaged: stacks: "
                                  "'../../escaped' is not a valid stack name\n  hint: move it away")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
