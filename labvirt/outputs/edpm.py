"""The same lab for RHOSO 18: an `edpm/` bundle of openstack-k8s-operators custom resources.

A pre-provisioned EDPM node is an entry of an `OpenStackDataPlaneNodeSet`; a DCN site is its own
NodeSet (the adoption guide maps one TripleO stack to one NodeSet). From the lab model this
writes a `NetConfig` with the ctlplane network, one NodeSet and one `OpenStackDataPlaneDeployment`
per compute/HCI stack, a kustomization, the `oc create secret` command for the lab's key and a
README. What the operator's admission webhooks would refuse is refused here first, as an
`InputError` with the fix (`check_sites`, `netconfig`).

Shapes follow the operator's CRDs (openstack-operator config/crd/bases, infra-operator
config/crd/bases) and its docs; the consumer tier validates the output against those CRDs.
Every function returns data or text; nothing here writes files.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labvirt.errors import InputError
from labvirt.model import EDPM_USER, Lab, Node, Stack

BUNDLE_DIR = "edpm"
NAMESPACE = "openstack"
SECRET_NAME = "dataplane-ansible-ssh-private-key-secret"
NETCONFIG_NAME = "netconfig"
# EDPM's own name for the control plane network (dataplanev1.CtlPlaneNetwork): the operator
# derives ctlplane_ip & co. from it, whatever the layout calls the network.
CTLPLANE = "ctlplane"
SUBNET = "subnet1"
STACK_LABEL = "labvirt-stack"

# The operator's default services (the NodeSet CRD's `services` default): a compute node.
COMPUTE_SERVICES = (
    "redhat", "download-cache", "bootstrap", "configure-network", "validate-network",
    "install-os", "configure-os", "ssh-known-hosts", "run-os", "reboot-os", "install-certs",
    "ovn", "neutron-metadata", "libvirt", "nova", "telemetry",
)  # fmt: skip
# HCI before Ceph exists, in the order of the DCN/HCI guides: the OS, with ceph-hci-pre
# (storage networks and firewall for Ceph) before configure-os.
HCI_PRE_CEPH_SERVICES = (
    "redhat", "bootstrap", "download-cache", "configure-network", "validate-network",
    "install-os", "ceph-hci-pre", "configure-os", "ssh-known-hosts", "run-os", "reboot-os",
)  # fmt: skip
# ... and after cephadm deployed the site's Ceph cluster (a second Deployment's override).
HCI_POST_CEPH_SERVICES = (
    "install-certs", "ceph-client", "ovn", "neutron-metadata", "libvirt", "nova-custom-ceph",
)  # fmt: skip

# TripleO roles with an EDPM equivalent: (kind, central site or edge site)
EDPM_ROLES: dict[str, tuple[str, bool]] = {
    "Compute": ("compute", True),
    "ComputeHCI": ("hci", True),
    "DistributedCompute": ("compute", False),
    "DistributedComputeScaleOut": ("compute", False),
    "DistributedComputeHCI": ("hci", False),
    "DistributedComputeHCIScaleOut": ("hci", False),
}
# NetConfig's webhook (infra-operator validateDNSDomain)
DNS_DOMAIN_RE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$")
# metadata.name of a custom resource: a DNS-1123 subdomain (lower case)
K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def not_edpm(role: str) -> str | None:
    """What a stack of this role is under RHOSO 18, when it is not an EDPM NodeSet."""
    if role.startswith("Controller"):
        return "the control plane runs as the OpenShift control plane (OpenStackControlPlane)"
    if role.startswith("Ceph"):
        return ("an external Ceph cluster, deployed with cephadm from the stack's "
                "inventory.yaml; the control plane and the NodeSets are its clients")
    return None


@dataclass(frozen=True)
class Site:
    """One compute/HCI stack as one NodeSet."""

    stack: str
    role: str
    kind: str  # compute | hci
    central: bool
    az: str
    nodes: tuple[Node, ...]

    @property
    def services(self) -> tuple[str, ...]:
        return HCI_PRE_CEPH_SERVICES if self.kind == "hci" else COMPUTE_SERVICES

    @property
    def deployment(self) -> str:
        return f"{self.stack}-pre-ceph" if self.kind == "hci" else self.stack


@dataclass(frozen=True)
class Other:
    """A stack that is not EDPM, and what it is under RHOSO 18."""

    stack: str
    role: str
    what: str


def _stack_kind(stack: Stack) -> tuple[str, bool] | None:
    """The stack's EDPM (kind, central site?), or None when it is not EDPM. Raises
    InputError for a stack that cannot be a NodeSet."""
    roles = stack.roles()
    kinds = {r: EDPM_ROLES.get(r) for r in roles}
    edpm = [r for r in roles if kinds[r]]
    other = [r for r in roles if not kinds[r]]
    unknown = [r for r in other if not_edpm(r) is None]
    if unknown:
        raise InputError(
            f"stack {stack.name!r} has role {unknown[0]}, which has no EDPM equivalent "
            "labvirt knows: it writes RHOSO 18 data-plane NodeSets for compute and HCI roles "
            f"({', '.join(EDPM_ROLES)}); Controller* roles are the OpenShift control plane "
            "and Ceph* roles the external Ceph cluster",
            f"give the stack one of those roles (labvirt assign {stack.name} "
            f"{stack.members[0].node} --role Compute), or take its nodes out "
            f"(labvirt unassign {' '.join(stack.nodes)})")
    if edpm and other:
        node = next(m.node for m in stack.members if m.role == edpm[0])
        raise InputError(
            f"stack {stack.name!r} mixes EDPM role {edpm[0]} ({node}) with {other[0]}: a "
            "compute stack becomes an OpenStackDataPlaneNodeSet, whose nodes are all "
            "data-plane nodes",
            f"move {node} to a stack of its own: labvirt assign <stack> {node} "
            f"--role {edpm[0]}")
    if not edpm:
        return None
    found = {k for r in edpm if (k := kinds[r]) is not None}
    if len({k[0] for k in found}) > 1:
        hci = next(r for r in edpm if EDPM_ROLES[r][0] == "hci")
        node = next(m.node for m in stack.members if m.role == hci)
        raise InputError(
            f"stack {stack.name!r} mixes compute and HCI roles ({', '.join(edpm)}): a NodeSet "
            "has one services list, and HCI nodes need ceph-hci-pre before Ceph exists",
            f"move {node} to a stack of its own: labvirt assign <stack> {node} --role {hci}")
    return next(iter(found))[0], any(k[1] for k in found)


def plan(lab: Lab) -> tuple[list[Site], list[Other]]:
    """The NodeSets of the lab (stacks with members, in stack order) and the other stacks.
    Central sites are az0; edge sites get az1, az2, ... in stack order."""
    sites: list[Site] = []
    others: list[Other] = []
    edge = 0
    for stack in lab.stacks:
        if not stack.members:
            continue
        if stack.name == BUNDLE_DIR:
            raise InputError(
                f"a stack cannot be named {BUNDLE_DIR!r}: `labvirt inventory` writes the RHOSO "
                f"18 bundle to {BUNDLE_DIR}/ beside the stacks' directories",
                "rename the stack in the layout's labvirt.stacks")
        kind = _stack_kind(stack)
        if kind is None:
            what = not_edpm(stack.roles()[0])
            assert what is not None
            others.append(Other(stack.name, stack.roles()[0], what))
            continue
        if not K8S_NAME_RE.match(stack.name):
            raise InputError(
                f"stack {stack.name!r} would name an OpenStackDataPlaneNodeSet, and Kubernetes "
                "names are lower case (RFC 1123)",
                f"rename the stack {stack.name.lower()!r} in the layout's labvirt.stacks")
        if kind[1]:
            az = "az0"
        else:
            edge += 1
            az = f"az{edge}"
        sites.append(Site(stack.name, stack.roles()[0], kind[0], kind[1], az,
                          tuple(lab.node(h) for h in stack.nodes)))
    check_sites(sites)
    return sites, others


def check_sites(sites: list[Site]) -> None:
    """The NodeSet webhook's rules for pre-provisioned nodes: every node has an IP address
    as ansibleHost, and no hostName or ansibleHost is in two NodeSets."""
    seen: dict[str, str] = {}
    for site in sites:
        for node in site.nodes:
            host = _ansible_host(node)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise InputError(
                    f"node {node.hostname} of stack {site.stack!r} has no ctlplane address: "
                    "the operator requires an IP address as ansibleHost of a pre-provisioned "
                    "node", f"give it one: labvirt.nodes.{node.hostname}.ctlplane_ip") from None
            for key in (node.hostname, host):
                if key in seen and seen[key] != site.stack:
                    raise InputError(
                        f"node {node.hostname} ({key}) would be in two NodeSets, "
                        f"{seen[key]!r} and {site.stack!r}; the operator refuses it "
                        "(\"already exists in another cluster\")",
                        f"keep it in one stack: labvirt unassign {node.hostname}")
                seen[key] = site.stack


def _ansible_host(node: Node) -> str:
    return "" if node.ctlplane_ip is None else str(node.ctlplane_ip)


def _meta(name: str, stack: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if stack:
        meta["labels"] = {STACK_LABEL: stack}
    return meta


def _free_runs(hosts: list[ipaddress.IPv4Address], used: set[ipaddress.IPv4Address]
               ) -> list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]:
    runs: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]] = []
    start = prev = None
    for a in hosts:
        if a in used or int(a) & 0xFF == 0:  # IPAM skips .0 addresses anyway
            if start is not None and prev is not None:
                runs.append((start, prev))
            start = prev = None
            continue
        if start is None:
            start = a
        prev = a
    if start is not None and prev is not None:
        runs.append((start, prev))
    return runs


def netconfig(lab: Lab, sites: list[Site]) -> dict[str, Any]:
    """The ctlplane network for the operator's IPAM. EDPM nodes keep their addresses as
    fixedIPs; every other address of the lab (gateway, hypervisor, undercloud, controllers,
    Ceph, unassigned nodes) is excluded, and the allocation ranges hold no lab address at all."""
    cp = lab.ctlplane
    domain = f"{CTLPLANE}.{cp.dns_domain}"
    if not DNS_DOMAIN_RE.match(domain):
        raise InputError(
            f"the operator's NetConfig refuses the DNS domain {domain!r} of the ctlplane "
            "network (it must end in a label of two or more letters)",
            "set labvirt.ctlplane.dns_domain to a name like localdomain or lab.example.com")
    edpm = {n.ctlplane_ip for s in sites for n in s.nodes}
    lab_addresses = {cp.gateway, cp.host_ip, cp.undercloud_ip}
    lab_addresses |= {n.ctlplane_ip for n in lab.nodes if n.ctlplane_ip is not None}
    exclude = sorted(a for a in lab_addresses - edpm if a in cp.cidr)
    hosts = list(cp.cidr.hosts())
    node_top = max((n.ctlplane_ip for n in lab.nodes if n.ctlplane_ip is not None),
                   default=cp.gateway)
    top = max(node_top, cp.gateway, cp.undercloud_ip)
    # above every node first: where a lab grows by first_ip on, IPAM comes last
    runs = _free_runs([a for a in hosts if a > top], lab_addresses)
    if not runs:
        runs = _free_runs(hosts, lab_addresses)
    if not runs:
        raise InputError(
            f"the ctlplane network {cp.cidr} has no address left for the operator's IPAM "
            "(every address is a lab node's)", "use a larger labvirt.ctlplane.cidr")
    subnet: dict[str, Any] = {
        "name": SUBNET,
        "cidr": str(cp.cidr),
        "gateway": str(cp.gateway),
        "allocationRanges": [{"start": str(a), "end": str(b)} for a, b in runs],
        "excludeAddresses": [str(a) for a in exclude],
    }
    return {
        "apiVersion": "network.openstack.org/v1beta1",
        "kind": "NetConfig",
        "metadata": _meta(NETCONFIG_NAME),
        "spec": {"networks": [{
            "name": CTLPLANE,
            "dnsDomain": domain,
            "mtu": 1500,
            "subnets": [subnet],
        }]},
    }


def nodeset(lab: Lab, site: Site) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node in site.nodes:
        ip = _ansible_host(node)
        nodes[node.hostname] = {
            "hostName": node.hostname,
            "ansible": {"ansibleHost": ip, "ansiblePort": 22},
            "networks": [{"name": CTLPLANE, "subnetName": SUBNET, "fixedIP": ip,
                          "defaultRoute": True}],
        }
    return {
        "apiVersion": "dataplane.openstack.org/v1beta1",
        "kind": "OpenStackDataPlaneNodeSet",
        "metadata": _meta(site.stack, site.stack),
        "spec": {
            "preProvisioned": True,
            "networkAttachments": [CTLPLANE],
            "nodeTemplate": {
                "ansibleSSHPrivateKeySecret": SECRET_NAME,
                "ansible": {
                    "ansibleUser": EDPM_USER,
                    "ansibleVars": {
                        # the site's availability zone, for OVN's chassis
                        "edpm_ovn_availability_zones": [site.az],
                        "edpm_sshd_allowed_ranges": [str(lab.ctlplane.cidr)],
                    },
                },
            },
            "nodes": nodes,
            "services": list(site.services),
        },
    }


def deployment(site: Site) -> dict[str, Any]:
    return {
        "apiVersion": "dataplane.openstack.org/v1beta1",
        "kind": "OpenStackDataPlaneDeployment",
        "metadata": _meta(site.deployment, site.stack),
        "spec": {"nodeSets": [site.stack]},
    }


def secret_command(key: Path) -> str:
    """The documented way to put the lab's key in the Secret the NodeSets name (the key
    itself never goes into a manifest)."""
    private = shlex.quote(f"ssh-privatekey={key}")
    public = shlex.quote(f"ssh-publickey={key}.pub")
    return (f"oc create secret generic {SECRET_NAME} --save-config --dry-run=client \\\n"
            f"  --from-file={private} \\\n  --from-file={public} \\\n"
            f"  -n {NAMESPACE} -o yaml | oc apply -f -\n")


FILES = ("netconfig.yaml", "nodesets.yaml", "deployments.yaml")


def kustomization(sites: list[Site]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": list(FILES) if sites else [FILES[0]],
    }


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)


def _docs(docs: list[dict[str, Any]], header: str) -> str:
    if not docs:
        return f"# {header}\n# (no compute or HCI stack has nodes: nothing to deploy)\n"
    return f"# {header}\n" + "---\n".join(_yaml(d) for d in docs)


def readme(lab: Lab, sites: list[Site], others: list[Other], key: Path) -> str:
    lines = [
        f"# RHOSO 18 (EDPM) bundle of lab {lab.name}",
        "",
        "Written by `labvirt inventory` from the current stack assignment; regenerate it after "
        "`labvirt assign`. Every node has the user `cloud-admin` (the operator's default "
        "`ansibleUser`) with the lab's key and passwordless sudo.",
        "",
        "## Stacks that are not EDPM NodeSets",
        "",
    ]
    lines += [f"- `{o.stack}` ({o.role}): {o.what}." for o in others] or ["- none"]
    lines += ["", "## NodeSets", ""]
    for s in sites:
        where = "central site" if s.central else "edge site"
        lines.append(f"- `{s.stack}` ({s.role}, {s.kind}, {where}, availability zone "
                     f"`{s.az}`): {', '.join(n.hostname for n in s.nodes)}; deployment "
                     f"`{s.deployment}`")
    if not sites:
        lines.append("- none: no compute or HCI stack has nodes")
    lines += [
        "",
        "## Order of the DCN deployment",
        "",
        "Run the commands in this directory. A namespace has one `NetConfig`: if yours "
        "exists, add this ctlplane network to it instead of applying netconfig.yaml.",
        "",
        "1. The SSH key secret (the lab's key, never in a manifest), then the network:",
        "",
        "   ```",
        "   " + secret_command(key).rstrip("\n").replace("\n", "\n   "),
        "   oc apply -f netconfig.yaml",
        "   ```",
        "",
    ]
    step = 2
    for s in sorted(sites, key=lambda x: (not x.central, int(x.az[2:]))):
        lines += [
            f"{step}. `{s.stack}` ({s.az}):",
            "",
            "   ```",
            f"   oc apply -f nodesets.yaml -l {STACK_LABEL}={s.stack}",
            f"   oc apply -f deployments.yaml -l {STACK_LABEL}={s.stack}",
            f"   oc wait openstackdataplanedeployment/{s.deployment} --for condition=Ready "
            "--timeout=60m",
            "   ```",
            "",
        ]
        if s.kind == "hci":
            lines += [
                f"   Then deploy the site's Ceph cluster on its nodes with cephadm, and finish "
                f"with a second deployment of `{s.stack}` whose `servicesOverride` is: "
                f"{', '.join(HCI_POST_CEPH_SERVICES)} (`nova-custom-ceph` is the custom nova "
                "service with the site's Ceph configuration).",
                "",
            ]
        step += 1
    lines += [
        "Or everything at once: `oc apply -k .` (the deployments then run side by side).",
        "",
        "Afterwards, put each site's computes in its availability zone: "
        "`openstack aggregate create <az> --zone <az>` and "
        "`openstack aggregate add host <az> <host>`.",
        "",
    ]
    return "\n".join(lines)


def bundle(lab: Lab, key: Path, origin: str) -> list[tuple[str, str, str]]:
    """(file name, text, what) of every file of the bundle. Raises InputError, before
    anything is written, for what the operator would refuse."""
    sites, others = plan(lab)
    return [
        ("netconfig.yaml", _docs([netconfig(lab, sites)], origin),
         "RHOSO 18 NetConfig (ctlplane network for the operator's IPAM)"),
        ("nodesets.yaml", _docs([nodeset(lab, s) for s in sites], origin),
         f"RHOSO 18 OpenStackDataPlaneNodeSets ({len(sites)})"),
        ("deployments.yaml", _docs([deployment(s) for s in sites], origin),
         f"RHOSO 18 OpenStackDataPlaneDeployments ({len(sites)})"),
        ("kustomization.yaml", f"# {origin}\n" + _yaml(kustomization(sites)),
         "kustomization over the bundle"),
        ("ssh-key-secret.sh", f"#!/bin/sh\n# {origin}\nset -e\n" + secret_command(key),
         "oc command for the Secret with the lab's key"),
        ("README.md", f"<!-- {origin} -->\n" + readme(lab, sites, others, key),
         "how to apply the bundle, in DCN order"),
    ]
