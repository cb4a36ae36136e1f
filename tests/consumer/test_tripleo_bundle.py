"""labvirt's TripleO bundles read by TripleO's own code (pinned tripleo-ansible 6.0.0,
tripleo-common 18.0.0, tripleo-heat-templates 14.3.0 from PyPI; see tripleo-dists.txt),
for every stack of the demo lab and of a lab after `labvirt assign`.

tripleo_probe.py runs that code in a subprocess; it says there exactly what is faked
(Neutron, Ironic/metalsmith and Heat, which cannot exist here, at their client boundary).
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.consumer

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / ".venv" / "tripleo-dist"
WHEELS = {"ansible": "tripleo_ansible-6.0.0-py2.py3-none-any.whl",
          "common": "tripleo_common-18.0.0-py3-none-any.whl"}
SDIST = "tripleo-heat-templates-14.3.0.tar.gz"
LABVIRT = Path(sys.executable).parent / "labvirt"
DEMO = ("-f", "overrides/glance-dcn.yml", "-f", "overrides/tiny.yml")
THT = "/usr/share/openstack-tripleo-heat-templates"
# What labvirt's path B environment holds beyond what the provisioning chain writes, and
# why: the ctlplane attributes and routes a deploy without the undercloud's Neutron data
# needs, and the subnet/network of each port that deployed-neutron-port.yaml hands on as
# the server's ctlplane `addresses` (THT's role template reads the cidr there).
HAND_WRITTEN = {"CtlplaneNetworkAttributes", "ControlPlaneDefaultRoute", "EC2MetadataIp"}


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [f for f in [*WHEELS.values(), SDIST] if not (DIST / f).is_file()]
    if missing:
        pytest.fail(f"{DIST} lacks {missing}: run scripts/setup.sh (it downloads them)")
    root = tmp_path_factory.mktemp("tripleo")
    for name, wheel in WHEELS.items():
        with zipfile.ZipFile(DIST / wheel) as z:
            z.extractall(root / name)
    with tarfile.open(DIST / SDIST) as t:
        for m in t.getmembers():
            m.name = m.name.split("/", 1)[1] if "/" in m.name else "."
        t.extractall(root / "tht", filter="data")
    return root


def write_bundle(out: Path, state: Path, *assign: tuple[str, ...]) -> Path:
    for args in assign:
        subprocess.run([str(LABVIRT), *DEMO, "--state-dir", str(state), *args], cwd=REPO,
                       check=True, capture_output=True)
    subprocess.run([str(LABVIRT), *DEMO, "--state-dir", str(state), "inventory", "-o", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    return out


def probe(unpacked: Path, bundle: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("tripleo_probe.py")),
                           str(unpacked), str(bundle)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def labs(unpacked: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, tuple[Path, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("labs")
    demo = write_bundle(tmp / "demo", tmp / "state-demo")
    assigned = write_bundle(tmp / "assigned", tmp / "state-assigned",
                            ("assign", "dcn2", "oc0-ceph-3", "--role", "DistributedComputeHCI"),
                            ("unassign", "oc0-ceph-0"))
    return {"demo": (demo, probe(unpacked, demo)),
            "assigned": (assigned, probe(unpacked, assigned))}


DEMO_STACKS = ["central-ceph", "central-compute", "control-plane", "dcn0", "dcn1"]
ASSIGNED_STACKS = ["central-ceph", "control-plane", "dcn0", "dcn1", "dcn2"]
CASES = [("demo", s) for s in DEMO_STACKS] + [("assigned", s) for s in ASSIGNED_STACKS]


def test_both_labs_have_the_expected_stacks(labs: dict) -> None:
    assert sorted(labs["demo"][1]["stacks"]) == DEMO_STACKS
    assert sorted(labs["assigned"][1]["stacks"]) == ASSIGNED_STACKS


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(("lab", "stack"), CASES)
def test_provisioning_chain_writes_labvirts_environment(labs: dict, lab: str, stack: str) -> None:
    """Path A's chain on labvirt's baremetal-deployment.yaml (expand, check_existing,
    network ports, populate, unmanaged populate, network-ports populate) succeeds, and
    with `network vip provision` at labvirt's VIP writes exactly labvirt's path B file."""
    out, report = labs[lab]
    r = report["stacks"][stack]
    assert "provision_error" not in r, r["provision_error"]
    ours = load(out / stack / "deployed-server-environment.yaml")
    chain = copy.deepcopy(r["provisioned_env"])
    for key, value in r["vip_env"]["parameter_defaults"].items():
        chain["parameter_defaults"][key] = value
    chain["resource_registry"].update(r["vip_env"]["resource_registry"])
    assert ours["resource_registry"] == chain["resource_registry"]
    params = dict(ours["parameter_defaults"])
    assert set(params) - set(chain["parameter_defaults"]) == HAND_WRITTEN
    ports = params.pop("DeployedServerPortMap")
    for name, port in ports.items():
        assert port["subnets"] == [{"cidr": port["network"]["tags"][0]}]
        ports[name] = {"fixed_ips": port["fixed_ips"]}
    assert ports == chain["parameter_defaults"].pop("DeployedServerPortMap")
    assert {k: v for k, v in params.items() if k not in HAND_WRITTEN} == chain["parameter_defaults"]


def test_vif_on_unmanaged_nodes_breaks_the_chain(labs: dict, unpacked: Path,
                                                 tmp_path: Path) -> None:
    """The control: the same chain rejects what labvirt used to write (`vif: true`)."""
    out, _ = labs["demo"]
    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(out), str(bundle)], check=True)
    path = bundle / "dcn0" / "baremetal-deployment.yaml"
    roles = load(path)
    roles[0]["instances"][0]["networks"][0]["vif"] = True
    path.write_text(yaml.safe_dump(roles))
    r = probe(unpacked, bundle)["stacks"]["dcn0"]
    assert r.get("provision_error") == "KeyError: 'ctlplane'"


@pytest.mark.parametrize(("lab", "stack"), CASES)
def test_roles_file_is_what_roles_generate_writes(labs: dict, lab: str, stack: str) -> None:
    """tripleo-common's `roles generate` on THT's roles directory gives the same text (and
    validates each role)."""
    out, report = labs[lab]
    text = (out / stack / "roles_data.yaml").read_text()
    body = "".join(line for line in text.splitlines(keepends=True)[3:])  # labvirt's header
    assert body == report["stacks"][stack]["roles_generate"]


def test_role_data_is_the_pinned_sdists(unpacked: Path) -> None:
    """labvirt's package data holds THT's roles exactly, from exactly this sdist."""
    data = load(REPO / "labvirt" / "data" / "tht-roles.yaml")
    assert data["source"]["sha256"] == hashlib.sha256((DIST / SDIST).read_bytes()).hexdigest()
    assert data["source"]["version"] == "14.3.0"
    tht_roles = {p.stem: p.read_text() for p in (unpacked / "tht" / "roles").glob("*.yaml")}
    assert data["roles"] == tht_roles
    from labvirt.outputs.tripleo import roles
    assert roles.derive(DIST / SDIST) == {k: v for k, v in data.items()}  # regenerated = kept


@pytest.mark.parametrize(("lab", "stack"), CASES)
def test_tripleo_inventories_agree_with_labvirts(labs: dict, lab: str, stack: str) -> None:
    """TripleoInventories fed labvirt's nodes (through a Heat faked from THT's outputs)
    writes groups, hosts and vars that labvirt's inventory holds: every group with the same
    children and hosts, every host and group var equal, except server ids only Heat has."""
    out, report = labs[lab]
    theirs = report["stacks"][stack]["inventory"]
    ours = load(out / stack / "overcloud-deploy" / stack / "tripleo-ansible-inventory.yaml")
    assert_contains(ours, theirs)


def test_merged_inventories_agree(labs: dict) -> None:
    for lab in labs:
        out, report = labs[lab]
        assert_contains(load(out / "inventory.yaml"), report["merged_inventory"])


HEAT_ONLY = {"deploy_server_id", "bootstrap_server_id"}


def assert_contains(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert set(theirs) - {"_meta"} == set(ours), (
        f"groups only TripleO writes: {sorted(set(theirs) - set(ours) - {'_meta'})}; "
        f"only labvirt: {sorted(set(ours) - set(theirs))}")
    for name, group in theirs.items():
        if name == "_meta":
            continue
        mine = ours[name]
        assert set(group.get("children", {})) == set(mine.get("children", {})), name
        assert set(group.get("hosts", {})) == set(mine.get("hosts", {})), name
        for host, hv in (group.get("hosts") or {}).items():
            want = {k: v for k, v in hv.items() if k not in HEAT_ONLY}
            assert want == mine["hosts"][host], (name, host)
        want = {k: v for k, v in (group.get("vars") or {}).items() if k not in HEAT_ONLY}
        assert want == (mine.get("vars") or {}), name


@pytest.mark.parametrize(("lab", "stack"), CASES)
def test_ceph_deploy_reads_hosts_from_the_bundle(labs: dict, lab: str, stack: str) -> None:
    """ceph_spec_bootstrap (what `openstack overcloud ceph deploy` runs) finds every node
    with its address in the environment and in the working-directory inventory, and the
    Ceph services of the roles file."""
    out, report = labs[lab]
    r = report["stacks"][stack]
    assert "ceph_error" not in r, r["ceph_error"]
    nodes = load(out / stack / "deployed-server-environment.yaml")["parameter_defaults"][
        "NodePortMap"]
    ips = {h: m["ctlplane"]["ip_address"] for h, m in nodes.items()}
    assert r["ceph"]["hosts_to_ips"] == ips
    assert r["ceph"]["inventory_hosts_to_ips"] == ips
    role = next(iter(r["ceph"]["roles_to_hosts"]))
    assert sorted(r["ceph"]["roles_to_hosts"][role]) == sorted(ips)
    if role in ("CephAll", "DistributedComputeHCI"):
        assert r["ceph"]["roles_to_svcs"][role] == ["CephMgr", "CephMon", "CephOSD"]


@pytest.mark.parametrize("lab", ["demo", "assigned"])
def test_every_template_and_parameter_named_exists_in_tht(labs: dict, unpacked: Path,
                                                          lab: str) -> None:
    """Every THT path in the bundle and in deploy-order.sh is a file of the pinned THT, and
    every parameter the bundle's own environments set is one THT's templates declare."""
    out, _ = labs[lab]
    tht = unpacked / "tht"
    texts = [p.read_text() for p in out.rglob("*") if p.is_file() and "edpm" not in p.parts]
    import re
    named = set()
    for text in texts:
        named |= set(re.findall(re.escape(THT) + r"/([\w./-]+\.yaml)", text))
        named |= set(re.findall(r'"\$THT/([\w./-]+\.yaml)"', text))
    assert named and all((tht / rel).is_file() for rel in named), sorted(
        r for r in named if not (tht / r).is_file())
    declared = set()
    for pattern in ("deployment/**/*.yaml", "*.yaml", "network/**/*.yaml", "puppet/**/*.yaml",
                    "deployed-server/*.yaml"):
        for p in tht.glob(pattern):
            declared |= set(re.findall(r"^  (\w+):\n", p.read_text(errors="replace"), re.M))
    for f in [*out.glob("*/availability-zone.yaml"), *out.glob("*/glance-*.yaml"),
              *out.glob("*/external-ceph.yaml")]:
        params = set(load(f)["parameter_defaults"])
        assert params <= declared, (f, sorted(params - declared))
