"""Names and addresses every TripleO file of a stack shares."""

from __future__ import annotations

import ipaddress

from labvirt.model import Lab, Node, Stack

THT = "/usr/share/openstack-tripleo-heat-templates"
# Every file in a bundle and every command of the deploy order name the templates so.
NO_NETWORKS = f"{THT}/network-data-samples/no-networks.yaml"
CONTROL_VIP_NAME = "control_virtual_ip"  # what tripleo-ansible names the ctlplane VIP port


def role_word(role: str) -> str:
    """The word tripleo-ansible puts in a role's default hostname format."""
    return "novacompute" if role == "Compute" else role.lower()


def hostname_format(role: str) -> str:
    return f"%stackname%-{role_word(role)}-%index%"


def members_by_role(lab: Lab, stack: Stack) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for m in stack.members:
        out.setdefault(m.role, []).append(lab.node(m.node))
    return out


def ip(node: Node) -> str:
    assert node.ctlplane_ip is not None
    return str(node.ctlplane_ip)


def control_plane_vips(lab: Lab) -> dict[str, str]:
    """Every stack's control-plane VIP: each stack creates its own ControlVirtualIP on the
    shared ctlplane, so each gets an address of the ctlplane range that no node, gateway,
    undercloud or DNS server uses, from the top of the range down (far from the nodes,
    which are numbered upwards, and from the undercloud's DHCP ranges), in layout order of
    the stacks so that moving nodes does not move any stack's VIP."""
    cp = lab.ctlplane
    used = {n.ctlplane_ip for n in lab.nodes if n.ctlplane_ip is not None}
    used |= {cp.gateway, cp.undercloud_ip, cp.host_ip, *cp.dns}
    free = (a for a in reversed(list(cp.cidr.hosts())) if a not in used)
    vips: dict[str, str] = {}
    for stack in lab.stacks:
        address: ipaddress.IPv4Address | None = next(free, None)
        if address is None:  # a /29 with more stacks than spare addresses
            from labvirt.errors import InputError
            raise InputError(
                f"the ctlplane {cp.cidr} has no free address left for the control-plane VIP "
                f"of stack {stack.name!r}",
                "make labvirt.ctlplane.cidr larger, or use fewer stacks")
        vips[stack.name] = str(address)
    return vips


def edge_stack(stack: Stack) -> bool:
    """A DCN edge site: its roles are THT's DistributedCompute* roles."""
    return any(r.startswith("DistributedCompute") for r in stack.roles())
