"""The lab as plain data: the stable JSON/YAML shape of `labvirt show` (documented in README)."""

from __future__ import annotations

from typing import Any

from labvirt.model import Lab, Node
from labvirt.outputs.access import endpoint

SHOW_SCHEMA_VERSION = 1


def human_size(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def node_to_dict(lab: Lab, node: Node) -> dict[str, Any]:
    member = lab.stack_of(node.hostname)
    ep = endpoint(lab, node)
    return {
        "hostname": node.hostname,
        "domain": node.domain,
        "vm": node.vm_name,
        "overcloud": node.overcloud,
        "undercloud": node.is_undercloud,
        "cpu": node.cpu,
        "memory_mib": node.memory_mib,
        "memory_kib": node.memory_kib,
        "boot": node.boot,
        "stack": member[0] if member else None,
        "role": member[1] if member else None,
        "ctlplane_ip": str(node.ctlplane_ip) if node.ctlplane_ip else None,
        "ssh": {"host": ep.host, "port": ep.port, "user": lab.ssh_user},
        "disks": [
            {"role": d.role, "volume": d.volume, "format": d.format, "target": d.target,
             "size_bytes": d.size_bytes, "size": human_size(d.size_bytes)}
            for d in node.disks
        ],
        "nics": [{"network": n.network, "mac": n.mac} for n in node.nics],
    }


def lab_to_dict(lab: Lab) -> dict[str, Any]:
    cp = lab.ctlplane
    return {
        "schema": SHOW_SCHEMA_VERSION,
        "lab": {
            "name": lab.name,
            "prefix": lab.prefix,
            "uri": lab.uri,
            "domain_type": lab.domain_type,
            "machine": lab.machine,
            "uefi": lab.uefi,
            "access": lab.access,
            "image": lab.image,
            "pool": {"name": lab.pool_name, "path": lab.pool_path},
            "ssh_user": lab.ssh_user,
            "sources": list(lab.sources),
        },
        "ctlplane": {
            "network": cp.network,
            "cidr": str(cp.cidr),
            "gateway": str(cp.gateway),
            "undercloud_ip": str(cp.undercloud_ip),
            "host_ip": str(cp.host_ip),
            "dns": [str(a) for a in cp.dns],
            "dns_domain": cp.dns_domain,
        },
        "nodes": [node_to_dict(lab, n) for n in lab.nodes],
        "networks": [
            {
                "name": n.name,
                "libvirt_name": n.libvirt_name,
                "bridge": n.bridge,
                "forward": n.forward,
                "address": str(n.address) if n.address else None,
                "dhcp": [str(a) for a in n.dhcp_range] if n.dhcp_range else None,
                "ctlplane": n.is_ctlplane,
            }
            for n in lab.networks
        ],
        "stacks": [
            {"name": s.name, "role": s.role,
             "nodes": [{"node": m.node, "role": m.role} for m in s.members]}
            for s in lab.stacks
        ],
    }
