"""What TripleO and Ansible consume for pre-provisioned ("deployed server") nodes.

Shapes follow what TripleO's own tools emit (python-tripleoclient, tripleo-ansible,
tripleo-common); see shared/reference/tripleo-formats.md. Every function returns plain
data (dicts and lists), ready for yaml.safe_dump; nothing here writes files.
"""

from __future__ import annotations

from typing import Any

from labvirt.model import Lab, Node, Stack

DEPLOYED_NEUTRON_PORT = (
    "/usr/share/openstack-tripleo-heat-templates/deployed-server/deployed-neutron-port.yaml"
)


def role_word(role: str) -> str:
    """The word tripleo-ansible puts in a role's default hostname format."""
    return "novacompute" if role == "Compute" else role.lower()


def hostname_format(role: str) -> str:
    return f"%stackname%-{role_word(role)}-%index%"


def _members_by_role(lab: Lab, stack: Stack) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for m in stack.members:
        out.setdefault(m.role, []).append(lab.node(m.node))
    return out


def _ip(node: Node) -> str:
    assert node.ctlplane_ip is not None
    return str(node.ctlplane_ip)


def _host_vars(lab: Lab, node: Node) -> dict[str, Any]:
    domain = lab.ctlplane.dns_domain
    return {
        "ansible_host": _ip(node),
        "ctlplane_ip": _ip(node),
        "ctlplane_hostname": f"{node.hostname}.ctlplane.{domain}",
        "canonical_hostname": f"{node.hostname}.{domain}",
    }


def _role_vars(lab: Lab, role: str) -> dict[str, Any]:
    return {
        "ansible_ssh_user": lab.ssh_user,
        "tripleo_role_name": role,
        "tripleo_role_networks": [lab.ctlplane.network],
    }


def _undercloud_group(**extra: Any) -> dict[str, Any]:
    return {
        "hosts": {"undercloud": {}},
        "vars": {"ansible_connection": "local", "ansible_host": "localhost", **extra},
    }


def stack_inventory(lab: Lab, stack: Stack) -> dict[str, Any]:
    """One stack's inventory, shaped like tripleo-ansible-inventory's static YAML."""
    inv: dict[str, Any] = {"Undercloud": _undercloud_group(plan=stack.name)}
    roles = _members_by_role(lab, stack)
    for role, nodes in roles.items():
        inv[role] = {
            "hosts": {n.hostname: _host_vars(lab, n) for n in nodes},
            "vars": _role_vars(lab, role),
        }
    inv["allovercloud"] = {"children": {role: {} for role in roles}}
    inv.setdefault(stack.name, {"children": {}})["children"]["allovercloud"] = {}
    inv.setdefault("overcloud", {"children": {}})["children"]["allovercloud"] = {}
    return inv


def merged_inventory(lab: Lab, stacks: list[Stack]) -> dict[str, Any]:
    """All stacks in one inventory, the way `tripleo-ansible-inventory --stack a,b` merges:
    `<stack>_<Role>` groups, role groups spanning stacks, `<stack>_allovercloud` under a
    group named after the stack, one Undercloud with `plans`."""
    inv: dict[str, Any] = {
        "Undercloud": _undercloud_group(plans=sorted(s.name for s in stacks)),
    }
    spanning: dict[str, dict[str, Any]] = {}
    for stack in stacks:
        roles = _members_by_role(lab, stack)
        for role, nodes in roles.items():
            inv[f"{stack.name}_{role}"] = {
                "hosts": {n.hostname: _host_vars(lab, n) for n in nodes},
                "vars": _role_vars(lab, role),
            }
            spanning.setdefault(role, {"children": {}})["children"][f"{stack.name}_{role}"] = {}
        inv[f"{stack.name}_allovercloud"] = {
            "children": {f"{stack.name}_{role}": {} for role in roles}
        }
        inv[stack.name] = {"children": {f"{stack.name}_allovercloud": {}}}
    inv.update(spanning)
    every = {f"{s.name}_allovercloud": {} for s in stacks}
    inv["allovercloud"] = {"children": dict(every)}
    inv["overcloud"] = {"children": {"allovercloud": {}}}
    return inv


def deployed_server_environment(lab: Lab, stack: Stack) -> dict[str, Any]:
    """What `openstack overcloud node provision` would output for these nodes, plus the
    parameters a hand-written deployed-server deploy sets."""
    cp = lab.ctlplane
    cidr = str(cp.cidr)
    params: dict[str, Any] = {}
    hostname_map: dict[str, str] = {}
    port_map: dict[str, Any] = {}
    node_port_map: dict[str, Any] = {}
    for role, nodes in _members_by_role(lab, stack).items():
        params[f"{role}Count"] = len(nodes)
        params[f"{role}HostnameFormat"] = hostname_format(role)
        for index, node in enumerate(nodes):
            generated = f"{stack.name}-{role_word(role)}-{index}"
            hostname_map[generated] = node.hostname
            port_map[f"{node.hostname.lower()}-ctlplane"] = {
                "fixed_ips": [{"ip_address": _ip(node)}],
                "subnets": [{"cidr": cidr}],
                "network": {"tags": [cidr]},
            }
            node_port_map[node.hostname] = {
                cp.network: {
                    "ip_address": _ip(node),
                    "ip_address_uri": _ip(node),
                    "ip_subnet": f"{_ip(node)}/{cp.cidr.prefixlen}",
                }
            }
    params["HostnameMap"] = hostname_map
    params["DeployedServerPortMap"] = port_map
    params["NodePortMap"] = node_port_map
    params["CtlplaneNetworkAttributes"] = {
        "network": {
            "dns_domain": f"{cp.network}.{cp.dns_domain}.",
            "mtu": 1500,
            "name": cp.network,
            "tags": [cidr],
        },
        "subnets": {
            f"{cp.network}-subnet": {
                "cidr": cidr,
                "dns_nameservers": [str(a) for a in cp.dns],
                "gateway_ip": str(cp.gateway),
                "host_routes": [],
                "ip_version": 4,
                "name": f"{cp.network}-subnet",
            }
        },
    }
    params["ControlPlaneDefaultRoute"] = str(cp.gateway)
    params["EC2MetadataIp"] = str(cp.undercloud_ip)
    return {
        "parameter_defaults": params,
        "resource_registry": {
            "OS::TripleO::DeployedServer::ControlPlanePort": DEPLOYED_NEUTRON_PORT,
        },
    }


def baremetal_deployment(lab: Lab, stack: Stack) -> list[dict[str, Any]]:
    """Input of `openstack overcloud node provision`: pre-provisioned (`managed: false`)
    instances with their fixed ctlplane addresses."""
    out = []
    for role, nodes in _members_by_role(lab, stack).items():
        out.append({
            "name": role,
            "count": len(nodes),
            "hostname_format": hostname_format(role),
            "instances": [
                {
                    "hostname": n.hostname,
                    "name": n.hostname,
                    "managed": False,
                    "networks": [
                        {"network": lab.ctlplane.network, "fixed_ip": _ip(n), "vif": True}
                    ],
                }
                for n in nodes
            ],
        })
    return out
