"""Ansible inventories in the shape TripleO itself writes them.

tripleo-common writes `~/overcloud-deploy/<stack>/tripleo-ansible-inventory.yaml` through
`TripleoInventories`, even for one stack: every group of a stack is prefixed with the stack
name and nested `allovercloud` -> `<stack>_allovercloud` -> `<stack>_<stack>` -> role groups,
with one service group per enabled service of the roles (and ceph-ansible's names for the
Ceph ones). A merged inventory is the same over several stacks. labvirt writes what that
code writes from Heat's outputs, except what only Heat can know (server ids).
"""

from __future__ import annotations

from typing import Any

from labvirt.model import Lab, Node, Stack
from labvirt.outputs.tripleo import roles as tht_roles
from labvirt.outputs.tripleo.common import control_plane_vips, ip, members_by_role
from labvirt.outputs.tripleo.order import stack_environments

# tripleo-common inventory.py: service groups that also get ceph-ansible's group name
CEPH_GROUPS = {
    "ceph_mon": "mons", "ceph_osd": "osds", "ceph_mgr": "mgrs", "ceph_rgw": "rgws",
    "ceph_mds": "mdss", "ceph_nfs": "nfss", "ceph_client": "clients",
    "ceph_rbdmirror": "rbdmirrors", "ceph_grafana": "grafana-server",
}
UNDERCLOUD_SERVICES = ["tripleo_ironic_conductor"]
# the nodes' and the undercloud's interpreter (EL 8/9), as the client passes it
PYTHON = "/usr/bin/python3"


def _host_vars(lab: Lab, node: Node) -> dict[str, Any]:
    domain = lab.ctlplane.dns_domain
    return {
        "ansible_host": ip(node),
        "ctlplane_ip": ip(node),
        "ctlplane_hostname": f"{node.hostname}.ctlplane.{domain}",
        "canonical_hostname": f"{node.hostname}.{domain}",
    }


def _undercloud(plans: list[str]) -> dict[str, Any]:
    plan = {"plan": plans[0]} if len(plans) == 1 else {}
    return {
        "hosts": {"undercloud": {}},
        "vars": {
            "ansible_host": "localhost",
            "ansible_connection": "local",
            "ansible_remote_tmp": "/tmp/ansible-${USER}",
            "any_error_fatal": True,
            "max_fail_percentage": 0,
            "ansible_python_interpreter": PYTHON,
            "undercloud_service_list": list(UNDERCLOUD_SERVICES),
            **plan,
            "plans": sorted(plans),
        },
    }


def _single(lab: Lab, stack: Stack) -> dict[str, Any]:
    """What TripleoInventory.list(dynamic=False) gives for one stack (Undercloud aside)."""
    inv: dict[str, Any] = {}
    by_role = members_by_role(lab, stack)
    for role, nodes in by_role.items():
        inv[role] = {
            "hosts": {n.hostname: _host_vars(lab, n) for n in nodes},
            "vars": {
                "ansible_ssh_user": lab.ssh_user,
                "tripleo_role_name": role,
                "tripleo_role_networks": [lab.ctlplane.network],
                "serial": 1,
                "ansible_python_interpreter": PYTHON,
            },
        }
    vip = control_plane_vips(lab)[stack.name]
    inv[stack.name] = {
        "vars": {f"{lab.ctlplane.network}_vip": vip, "redis_vip": vip, "container_cli": "podman"},
        "children": {r: {} for r in sorted(by_role)},
    }
    inv["allovercloud"] = {"children": {stack.name: {}}}
    services: dict[str, list[str]] = {}
    for role in by_role:
        for name in tht_roles.enabled_service_names(role, stack_environments(stack)):
            services.setdefault(name, []).append(role)
    for name in list(services):
        if name in CEPH_GROUPS:
            services[CEPH_GROUPS[name]] = services[name]
    for name, roles in sorted(services.items()):
        inv[name.lower()] = {
            "vars": {"ansible_ssh_user": lab.ssh_user, "ansible_python_interpreter": PYTHON},
            "children": {r: {} for r in sorted(roles)},
        }
    inv["excluded_overcloud"] = {"hosts": {}}
    return inv


def inventory(lab: Lab, stacks: list[Stack]) -> dict[str, Any]:
    """TripleoInventories' static merge of these stacks (one stack: its own inventory)."""
    out: dict[str, Any] = {"Undercloud": _undercloud([s.name for s in stacks])}
    for stack in stacks:
        prefix = f"{stack.name}_"
        for key, group in _single(lab, stack).items():
            if key != stack.name:
                out.setdefault(key, {"children": {}})["children"][prefix + key] = {}
            if "children" in group:
                out[prefix + key] = {
                    "children": {prefix + c: {} for c in sorted(group["children"])}}
                if "vars" in group:
                    out[prefix + key]["vars"] = group["vars"]
                if key == "allovercloud":
                    out[stack.name] = {"children": {prefix + key: {}}}
            else:
                out[prefix + key] = group
    for group in out.values():  # TripleO sorts every merged list of children
        if "children" in group:
            group["children"] = dict(sorted(group["children"].items()))
    return out
