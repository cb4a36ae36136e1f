"""How the hypervisor reaches the nodes: ssh_config, hosts file, hypervisor-side inventory.

In `bridge` access the hypervisor has an address on the ctlplane bridge and talks to each
node's ctlplane address; in `forward` access each node has a user-mode NIC whose port 22 is
forwarded from 127.0.0.1 on a deterministic port.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labvirt.model import Lab, Node


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def endpoint(lab: Lab, node: Node) -> Endpoint:
    if lab.access == "forward":
        assert node.ssh_port is not None
        return Endpoint("127.0.0.1", node.ssh_port)
    return Endpoint(str(node.ctlplane_ip), 22)


def _config_path(path: Path) -> str:
    """A path as ssh_config reads it: double-quoted when it holds whitespace."""
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_config(lab: Lab, key: Path, known_hosts: Path) -> str:
    lines = [f"# labvirt lab {lab.name}: ssh -F <this file> <node>", ""]
    for node in lab.nodes:
        ep = endpoint(lab, node)
        lines += [
            f"Host {node.hostname}",
            f"    HostName {ep.host}",
            f"    Port {ep.port}",
            f"    User {lab.ssh_user}",
            f"    IdentityFile {_config_path(key)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {_config_path(known_hosts)}",
            "    StrictHostKeyChecking yes",
            f"    HostKeyAlias {node.hostname}",
            "",
        ]
    return "\n".join(lines)


def hosts_file(lab: Lab) -> str:
    """/etc/hosts lines for the lab's ctlplane addresses (for use on the undercloud too)."""
    domain = lab.ctlplane.dns_domain
    lines = [f"# labvirt lab {lab.name}: ctlplane addresses"]
    for node in lab.nodes:
        lines.append(f"{node.ctlplane_ip} {node.hostname}.{domain} {node.hostname}")
    return "\n".join(lines) + "\n"


def hypervisor_inventory(lab: Lab, key: Path, known_hosts: Path) -> dict[str, Any]:
    """An inventory for running ansible from the hypervisor, with host key checking on."""
    def host_vars(node: Node) -> dict[str, Any]:
        ep = endpoint(lab, node)
        return {
            "ansible_host": ep.host,
            "ansible_port": ep.port,
            "ctlplane_ip": str(node.ctlplane_ip),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))} "
                "-o StrictHostKeyChecking=yes "
                f"-o HostKeyAlias={node.hostname} -o IdentitiesOnly=yes"
            ),
        }

    inv: dict[str, Any] = {
        "all": {
            "vars": {
                "ansible_user": lab.ssh_user,
                "ansible_ssh_private_key_file": str(key),
                "ansible_python_interpreter": "auto_silent",
            },
            "hosts": {n.hostname: host_vars(n) for n in lab.nodes},
        },
        # not "undercloud": Ansible warns when a group and a host share a name
        "Undercloud": {"hosts": {n.hostname: {} for n in lab.nodes if n.is_undercloud}},
    }
    for stack in lab.stacks:
        if stack.members:
            inv[stack.name] = {"hosts": {h: {} for h in stack.nodes}}
    unassigned = [
        n.hostname for n in lab.overcloud_nodes if lab.stack_of(n.hostname) is None
    ]
    if unassigned:
        inv["unassigned"] = {"hosts": {h: {} for h in unassigned}}
    return inv
