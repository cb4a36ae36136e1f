"""The `edpm/` bundle of `labvirt inventory`, judged by the operator's own rules.

The consumers here are openstack-k8s-operators' CustomResourceDefinitions (their
`openAPIV3Schema`, checked with `jsonschema` after the API server's defaulting) and the rules
of its admission webhooks and IPAM, as /work/shared/consumers/edpm/SOURCE.md names them:
NodeSet webhook (pre-provisioned nodes: ansibleHost an IP, no node in two NodeSets), NetConfig
webhook (DNS domain, gateway, ranges and exclusions inside the CIDR), IPSet webhook and IPAM
(fixedIP inside its subnet, not excluded, not reserved twice; dynamic addresses from the ranges
skipping excluded and reserved ones). No OpenShift cluster can run here: the webhooks and the
IPAM are re-implemented below from the operator's Go code, independently of labvirt's code.

The CRDs are read from `<repo>/../shared/consumers/edpm/` (or $LABVIRT_EDPM_CRDS) at test time
and never copied into the repository; without them the schema tests are skipped.

Two labs: the demo lab, and the demo lab after `labvirt assign` moved nodes between stacks and
into a new DCN site.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.consumer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO = ("-f", "overrides/glance-dcn.yml", "-f", "overrides/tiny.yml")
NO_STATE = Path("/nonexistent/labvirt-state")
REGEN = os.environ.get("LABVIRT_REGEN_GOLDEN") == "1"
GOLDEN = REPO / "tests" / "golden" / "edpm"
CRD_ENV = "LABVIRT_EDPM_CRDS"
CRD_FILES = (
    "dataplane.openstack.org_openstackdataplanenodesets.yaml",
    "dataplane.openstack.org_openstackdataplanedeployments.yaml",
    "network.openstack.org_netconfigs.yaml",
)
BUNDLE = ("README.md", "deployments.yaml", "kustomization.yaml", "netconfig.yaml",
          "nodesets.yaml", "ssh-key-secret.sh")
# what each lab must come out as: NodeSet -> (nodes, availability zone, HCI?)
EXPECTED = {
    "demo": {
        "central-compute": (["oc0-ceph-3"], "az0", False),
        "dcn0": (["oc0-ceph-4"], "az1", True),
        "dcn1": (["oc0-ceph-5"], "az2", True),
    },
    # central-compute lost its node to dcn0, and oc0-ceph-2 left Ceph for a new site dcn2
    "assigned": {
        "dcn0": (["oc0-ceph-3", "oc0-ceph-4"], "az1", True),
        "dcn1": (["oc0-ceph-5"], "az2", True),
        "dcn2": (["oc0-ceph-2"], "az3", True),
    },
}
ASSIGNMENTS = (("assign", "dcn0", "oc0-ceph-3"),
               ("assign", "dcn2", "oc0-ceph-2", "--role", "DistributedComputeHCI"))


def crd_dir() -> Path:
    if os.environ.get(CRD_ENV):
        return Path(os.environ[CRD_ENV])
    return REPO.parent / "shared" / "consumers" / "edpm"


def labvirt(*args: str | Path, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVIRT_")}
    env["LABVIRT_STATE_DIR"] = str(NO_STATE)
    proc = subprocess.run([str(BIN / "labvirt"), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if check is not None:
        assert proc.returncode == check, (
            f"labvirt {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}"
            f"\n{proc.stderr}")
    return proc


# --- the labs and their bundles --------------------------------------------------------------

class Lab:
    def __init__(self, name: str, out: Path, state: Path, show: dict[str, Any]) -> None:
        self.name, self.out, self.state, self.show = name, out, state, show
        self.dir = out / "edpm"

    def docs(self, file: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all((self.dir / file).read_text()) if d]

    @property
    def netconfig(self) -> dict[str, Any]:
        (doc,) = self.docs("netconfig.yaml")
        return doc

    @property
    def nodesets(self) -> list[dict[str, Any]]:
        return self.docs("nodesets.yaml")

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return self.docs("deployments.yaml")

    def every_cr(self) -> list[dict[str, Any]]:
        return [self.netconfig, *self.nodesets, *self.deployments]

    def ip(self, host: str) -> str:
        return next(n["ctlplane_ip"] for n in self.show["nodes"] if n["hostname"] == host)

    def lab_addresses(self) -> set[str]:
        cp = self.show["ctlplane"]
        return {cp["gateway"], cp["undercloud_ip"], cp["host_ip"],
                *(n["ctlplane_ip"] for n in self.show["nodes"] if n["ctlplane_ip"])}


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Lab]:
    out: dict[str, Lab] = {}
    for name in EXPECTED:
        base = tmp_path_factory.mktemp(name)
        state = NO_STATE if name == "demo" else base / "state"
        for step in ASSIGNMENTS if name == "assigned" else ():
            labvirt(*DEMO, "--state-dir", state, *step)
        labvirt(*DEMO, "--state-dir", state, "inventory", "-o", base / "out")
        show = json.loads(labvirt(*DEMO, "--state-dir", state, "show", "--format",
                                  "json").stdout)
        out[name] = Lab(name, base / "out", state, show)
    assert not NO_STATE.exists()
    return out


@pytest.fixture(params=list(EXPECTED))
def lab(request: pytest.FixtureRequest, labs: dict[str, Lab]) -> Lab:
    return labs[request.param]


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema."""
    where = crd_dir()
    if not all((where / f).is_file() for f in CRD_FILES):
        pytest.skip(f"the operator's CRDs are not in {where} (../shared is absent; set "
                    f"{CRD_ENV} to a directory holding {', '.join(CRD_FILES)})")
    out = {}
    for f in CRD_FILES:
        crd = yaml.safe_load((where / f).read_text())
        version = crd["spec"]["versions"][0]
        key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
        out[key] = version["schema"]["openAPIV3Schema"]
    return out


# --- the operator's rules, from its Go code (see the module docstring) ---------------------

def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server does before validating: fill in every absent property that has
    a schema `default`, recursively (structural defaulting)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = dict(value)
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        for key, sub_value in out.items():
            if key in props:
                out[key] = with_defaults(props[key], sub_value)
            elif isinstance(extra, dict):
                out[key] = with_defaults(extra, sub_value)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], v) for v in value]
    return value


def schema_errors(crds: dict[tuple[str, str], dict[str, Any]], cr: dict[str, Any]) -> list[str]:
    import jsonschema

    key = (cr.get("apiVersion"), cr.get("kind"))
    if key not in crds:
        return [f"no CRD for {key}"]
    schema = crds[key]  # type: ignore[index]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(with_defaults(schema, cr))]


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RFC1123_HOSTNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}(\.[a-zA-Z0-9][a-zA-Z0-9-]{0,62})*$")
DNS_DOMAIN = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$")


def is_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def nodeset_webhook_errors(nodesets: list[dict[str, Any]]) -> list[str]:
    """ValidateCreate of each NodeSet, created one after the other in one namespace
    (api/dataplane/v1beta1/openstackdataplanenodeset_webhook.go, duplicateNodeCheck)."""
    errors: list[str] = []
    earlier: list[str] = []  # hostNames and ansibleHosts of the NodeSets created before
    for ns in nodesets:
        name = ns["metadata"]["name"]
        spec = ns["spec"]
        if not (DNS1123_SUBDOMAIN.match(name) and RFC1123_HOSTNAME.match(name)):
            errors.append(f"{name}: name must follow RFC1123")
        nodes = spec.get("nodes", {})
        if spec.get("preProvisioned"):
            names = list(earlier)
            for key, node in nodes.items():
                host = node.get("ansible", {}).get("ansibleHost", "")
                hostname = node.get("hostName") or key  # the webhook's Default()
                if not is_ip(host):
                    errors.append(f"{name}.nodes.{key}: ansibleHost must be a valid IP address "
                                  "for pre-provisioned nodes")
                if hostname in names or (host and host in names):
                    errors.append(f"{name}: node {hostname} already exists in another cluster")
                else:
                    names += [hostname, *([host] if host else [])]
        for key, node in nodes.items():
            earlier.append(node.get("hostName") or key)
            if node.get("ansible", {}).get("ansibleHost"):
                earlier.append(node["ansible"]["ansibleHost"])
    return errors


def netconfig_webhook_errors(netconfig: dict[str, Any]) -> list[str]:
    """infra-operator apis/network/v1beta1/netconfig_webhook.go: valiateNetworks/Subnet."""
    errors: list[str] = []
    net_names: set[str] = set()
    cidrs: set[str] = set()
    for net in netconfig["spec"]["networks"]:
        if net["name"] in net_names:
            errors.append(f"network {net['name']} twice")
        net_names.add(net["name"])
        if not DNS_DOMAIN.match(net["dnsDomain"]):
            errors.append(f"{net['name']}: invalid dnsDomain {net['dnsDomain']!r}")
        subnet_names: set[str] = set()
        for sub in net["subnets"]:
            where = f"{net['name']}/{sub['name']}"
            if sub["name"] in subnet_names or sub["cidr"] in cidrs:
                errors.append(f"{where}: name or cidr twice")
            subnet_names.add(sub["name"])
            cidrs.add(sub["cidr"])
            try:
                cidr = ipaddress.ip_network(sub["cidr"])
            except ValueError:
                errors.append(f"{where}: invalid cidr")
                continue

            def inside(addr: str, what: str, cidr: Any = cidr, where: str = where) -> bool:
                if not is_ip(addr) or ipaddress.ip_address(addr) not in cidr:
                    errors.append(f"{where}: {what} {addr} is not an address of {cidr}")
                    return False
                return True

            if sub.get("gateway") is not None:
                inside(sub["gateway"], "gateway")
            for r in sub["allocationRanges"]:
                if (inside(r["start"], "allocationRanges start")
                        and inside(r["end"], "allocationRanges end")
                        and ipaddress.ip_address(r["end"]) <= ipaddress.ip_address(r["start"])):
                    errors.append(f"{where}: range {r} does not end after its start")
            for addr in sub.get("excludeAddresses", []):
                inside(addr, "excludeAddresses entry")
    return errors


def ipam(netconfig: dict[str, Any], nodesets: list[dict[str, Any]]
         ) -> tuple[dict[str, str], set[str], list[str]]:
    """The IPSet webhook and the IPAM over every node, in creation order: (host -> its
    reserved ctlplane address, every address IPAM may still hand out, errors)."""
    errors: list[str] = []
    nets = {n["name"].lower(): n for n in netconfig["spec"]["networks"]}
    reserved: dict[str, str] = {}
    held: dict[tuple[str, str], str] = {}  # (network, address) -> node
    for ns in nodesets:
        template = ns["spec"]["nodeTemplate"].get("networks", [])
        for key, node in ns["spec"]["nodes"].items():
            routes = 0
            for n in node.get("networks") or template:
                where = f"{ns['metadata']['name']}.{key}.{n['name']}"
                net = nets.get(n["name"].lower())
                if net is None:
                    errors.append(f"{where}: network not in the NetConfig")
                    continue
                sub = next((s for s in net["subnets"]
                            if s["name"].lower() == n["subnetName"].lower()), None)
                if sub is None:
                    errors.append(f"{where}: subnet {n['subnetName']} not in the network")
                    continue
                if n.get("defaultRoute"):
                    routes += 1
                    if routes > 1 or not sub.get("gateway"):
                        errors.append(f"{where}: defaultRoute needs one route and a gateway")
                fixed = n.get("fixedIP")
                if fixed is None:
                    continue
                if not is_ip(fixed) or ipaddress.ip_address(fixed) not in ipaddress.ip_network(
                        sub["cidr"]):
                    errors.append(f"{where}: fixedIP {fixed} is not in {sub['cidr']}")
                elif fixed in sub.get("excludeAddresses", []):
                    errors.append(f"{where}: FixedIP {fixed} is in ExcludeAddresses")
                elif (n["name"].lower(), fixed) in held:
                    errors.append(f"{where}: {fixed} already reserved "
                                  f"(by {held[(n['name'].lower(), fixed)]})")
                else:
                    held[(n["name"].lower(), fixed)] = key
                    if n["name"].lower() == "ctlplane":
                        reserved[node.get("hostName") or key] = fixed
    dynamic: set[str] = set()
    for net in nets.values():
        for sub in net["subnets"]:
            excluded = set(sub.get("excludeAddresses", []))
            for r in sub["allocationRanges"]:
                a, end = ipaddress.ip_address(r["start"]), ipaddress.ip_address(r["end"])
                while a <= end:
                    text = str(a)
                    if (int(a) & 0xFF and text not in excluded
                            and (net["name"].lower(), text) not in held):
                        dynamic.add(text)
                    a += 1
    return reserved, dynamic, errors


# --- the tests ---------------------------------------------------------------------------------

def test_the_bundle_is_written(lab: Lab) -> None:
    assert sorted(p.name for p in lab.dir.iterdir()) == sorted(BUNDLE)
    kust = yaml.safe_load((lab.dir / "kustomization.yaml").read_text())
    assert kust["resources"] == ["netconfig.yaml", "nodesets.yaml", "deployments.yaml"]
    assert all((lab.dir / r).is_file() for r in kust["resources"])


def test_every_cr_validates_against_the_operators_schema(lab: Lab, crds: dict) -> None:
    crs = lab.every_cr()
    assert [c["kind"] for c in crs] == ["NetConfig", *["OpenStackDataPlaneNodeSet"] * 3,
                                        *["OpenStackDataPlaneDeployment"] * 3]
    for cr in crs:
        assert schema_errors(crds, cr) == [], cr["metadata"]["name"]


def test_the_schema_check_can_fail(labs: dict[str, Lab], crds: dict) -> None:
    """The same validator refuses what the API server refuses (so the test above means
    something): a string port, a NodeSet without nodes, a Deployment without nodeSets."""
    ns = copy.deepcopy(labs["demo"].nodesets[0])
    next(iter(ns["spec"]["nodes"].values()))["ansible"]["ansiblePort"] = "22"
    assert any("'22' is not of type 'integer'" in e for e in schema_errors(crds, ns))
    del ns["spec"]["nodes"]
    assert any("'nodes' is a required property" in e for e in schema_errors(crds, ns))
    dep = copy.deepcopy(labs["demo"].deployments[0])
    del dep["spec"]["nodeSets"]
    assert any("'nodeSets' is a required property" in e for e in schema_errors(crds, dep))
    # the default is what makes a Deployment without deploymentRequeueTime valid
    assert "deploymentRequeueTime" not in labs["demo"].deployments[0]["spec"]


def test_the_webhooks_accept_every_cr(lab: Lab) -> None:
    assert nodeset_webhook_errors(lab.nodesets) == []
    assert netconfig_webhook_errors(lab.netconfig) == []
    for ns in lab.nodesets:
        assert ns["spec"]["preProvisioned"] is True
        for node in ns["spec"]["nodes"].values():
            # the controller defaults the ctlplane fixedIP from ansibleHost: they must agree
            (cp,) = [n for n in node["networks"] if n["name"] == "ctlplane"]
            assert cp["fixedIP"] == node["ansible"]["ansibleHost"]


def test_the_webhook_checks_can_fail(labs: dict[str, Lab]) -> None:
    nodesets = copy.deepcopy(labs["demo"].nodesets)
    moved = next(iter(nodesets[0]["spec"]["nodes"].values()))
    nodesets[1]["spec"]["nodes"]["again"] = copy.deepcopy(moved)
    assert any("already exists in another cluster" in e for e in nodeset_webhook_errors(nodesets))
    moved["ansible"]["ansibleHost"] = moved["hostName"]
    assert any("must be a valid IP" in e for e in nodeset_webhook_errors(nodesets))
    net = copy.deepcopy(labs["demo"].netconfig)
    sub = net["spec"]["networks"][0]["subnets"][0]
    sub["excludeAddresses"].append("10.0.0.1")
    sub["allocationRanges"].append({"start": "192.168.24.9", "end": "192.168.24.2"})
    net["spec"]["networks"][0]["dnsDomain"] = "ctlplane.lab1"
    assert len(netconfig_webhook_errors(net)) == 3


def test_ipam_keeps_every_lab_address(lab: Lab) -> None:
    """Each EDPM node gets exactly the address it has; whatever IPAM hands out later is no
    lab address (undercloud, controllers, Ceph nodes, gateway and hypervisor included)."""
    reserved, dynamic, errors = ipam(lab.netconfig, lab.nodesets)
    assert errors == []
    nodes = {h for nodes, _, _ in EXPECTED[lab.name].values() for h in nodes}
    assert reserved == {h: lab.ip(h) for h in nodes}
    assert dynamic, "IPAM must have addresses left for what the operator adds"
    assert not dynamic & lab.lab_addresses()
    # and the non-EDPM addresses are excluded, so no one's fixedIP can take them either
    sub = lab.netconfig["spec"]["networks"][0]["subnets"][0]
    assert set(sub["excludeAddresses"]) == lab.lab_addresses() - set(reserved.values())


def test_the_ipam_checks_can_fail(labs: dict[str, Lab]) -> None:
    lab = labs["demo"]
    net = copy.deepcopy(lab.netconfig)
    sub = net["spec"]["networks"][0]["subnets"][0]
    sub["excludeAddresses"] = [lab.ip("oc0-ceph-4")]  # and no longer the controllers'
    sub["allocationRanges"] = [{"start": "192.168.24.2", "end": "192.168.24.253"}]
    nodesets = copy.deepcopy(lab.nodesets)
    nodesets[2]["spec"]["nodes"]["oc0-ceph-5"]["networks"][0]["fixedIP"] = lab.ip("oc0-ceph-3")
    _, dynamic, errors = ipam(net, nodesets)
    assert any("is in ExcludeAddresses" in e for e in errors)
    assert any("already reserved" in e for e in errors)
    assert lab.ip("oc0-controller-0") in dynamic  # a range over the lab's addresses


def test_nodesets_follow_the_stack_assignment(lab: Lab, crds: dict) -> None:
    default_services = crds[("dataplane.openstack.org/v1beta1", "OpenStackDataPlaneNodeSet")][
        "properties"]["spec"]["properties"]["services"]["default"]
    got = {}
    for ns in lab.nodesets:
        spec = ns["spec"]
        template = spec["nodeTemplate"]
        assert template["ansible"]["ansibleUser"] == "cloud-admin"
        assert spec["networkAttachments"] == ["ctlplane"]
        services = spec["services"]
        hci = "ceph-hci-pre" in services
        if hci:  # pre-Ceph: the OS only, ceph-hci-pre before configure-os, no nova yet
            assert services.index("install-os") < services.index("ceph-hci-pre") \
                < services.index("configure-os")
            assert "nova" not in services and "libvirt" not in services
        else:
            assert services == default_services
        (az,) = template["ansible"]["ansibleVars"]["edpm_ovn_availability_zones"]
        got[ns["metadata"]["name"]] = (list(spec["nodes"]), az, hci)
        for host, node in spec["nodes"].items():
            assert node["hostName"] == host
            assert node["ansible"] == {"ansibleHost": lab.ip(host), "ansiblePort": 22}
            assert node["networks"] == [{"name": "ctlplane", "subnetName": "subnet1",
                                         "fixedIP": lab.ip(host), "defaultRoute": True}]
    assert got == EXPECTED[lab.name]
    cp = lab.show["ctlplane"]
    (net,) = lab.netconfig["spec"]["networks"]
    assert net["dnsDomain"] == f"ctlplane.{cp['dns_domain']}"
    assert net["subnets"][0]["gateway"] == cp["gateway"]
    assert net["subnets"][0]["cidr"] == cp["cidr"]


def test_deployments_name_existing_nodesets_one_each(lab: Lab) -> None:
    names = [ns["metadata"]["name"] for ns in lab.nodesets]
    deployed = [n for d in lab.deployments for n in d["spec"]["nodeSets"]]
    assert sorted(deployed) == sorted(names)
    assert len({d["metadata"]["name"] for d in lab.deployments}) == len(lab.deployments)


def test_the_secret_command_names_the_lab_key_and_no_key_is_in_the_bundle(lab: Lab) -> None:
    script = (lab.dir / "ssh-key-secret.sh").read_text()
    words = shlex.split(script.split("set -e\n", 1)[1].replace("\\\n", " "))
    assert words[:4] == ["oc", "create", "secret", "generic"]
    secret = words[4]
    assert {ns["spec"]["nodeTemplate"]["ansibleSSHPrivateKeySecret"]
            for ns in lab.nodesets} == {secret}
    key = lab.state / "glance-dcn" / "id_ed25519"
    assert f"--from-file=ssh-privatekey={key}" in words
    assert f"--from-file=ssh-publickey={key}.pub" in words
    assert words[words.index("-n") + 1] == "openstack"
    for f in lab.dir.iterdir():
        assert "PRIVATE KEY" not in f.read_text(), f
    readme = (lab.dir / "README.md").read_text()
    assert str(key) in readme


def test_the_readme_gives_the_dcn_order(lab: Lab) -> None:
    readme = (lab.dir / "README.md").read_text()
    order = [m for m in re.findall(r"-l labvirt-stack=(\S+)", readme)][::2]
    central = [s for s, (_, az, _) in EXPECTED[lab.name].items() if az == "az0"]
    edge = sorted((s for s, (_, az, _) in EXPECTED[lab.name].items() if az != "az0"),
                  key=lambda s: EXPECTED[lab.name][s][1])
    assert order == central + edge
    for stack in ("central-ceph", "control-plane"):
        assert f"- `{stack}` (" in readme


def test_golden_edpm_assigned(labs: dict[str, Lab]) -> None:
    """The bundle of the assigned lab (the demo lab's is in golden/inventory/demo/edpm);
    its state directory is a temporary one, written as <state>."""
    lab = labs["assigned"]
    for name in BUNDLE:
        text = (lab.dir / name).read_text().replace(str(lab.state), "<state>")
        path = GOLDEN / "assigned" / name
        if REGEN:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            continue
        assert path.is_file(), f"{path} is missing; create it with LABVIRT_REGEN_GOLDEN=1"
        assert text == path.read_text(), (
            f"{name} differs from {path.relative_to(REPO)}; if intended, regenerate with "
            "LABVIRT_REGEN_GOLDEN=1 and review `git diff tests/golden`")
