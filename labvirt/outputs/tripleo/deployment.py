"""The two deployment files of a stack: one per deployment path, never both.

Path A, `openstack overcloud deploy --deployed-server --baremetal-deployment FILE`: the
client runs tripleo-ansible's provisioning chain on `baremetal_deployment()` (adopting the
`managed: false` nodes, creating their ctlplane ports and the VIPs in the undercloud's
Neutron) and writes the environment itself.

Path B, `openstack overcloud deploy --deployed-server -e FILE`: `deployed_server_environment()`
is what that chain would write, plus what the ephemeral Heat needs because nothing
provisions the control-plane VIP (`ControlPlaneVipData` mapped through
`deployed_vip_ctlplane.yaml`). Combined with Path A its resource registry entries are
refused by the client ("Protected resource registry overrides detected").

Shapes are checked against tripleo-ansible's own code by the consumer tests.
"""

from __future__ import annotations

from typing import Any

from labvirt.model import Lab, Stack
from labvirt.outputs.tripleo.common import (
    CONTROL_VIP_NAME,
    THT,
    control_plane_vips,
    hostname_format,
    ip,
    members_by_role,
    role_word,
)

DEPLOYED_NEUTRON_PORT = f"{THT}/deployed-server/deployed-neutron-port.yaml"
DEPLOYED_VIP_CTLPLANE = f"{THT}/network/ports/deployed_vip_ctlplane.yaml"


def baremetal_deployment(lab: Lab, stack: Stack) -> list[dict[str, Any]]:
    """Path A input: pre-provisioned (`managed: false`) instances with their fixed
    ctlplane addresses. No `vif`: that means "metalsmith attaches this NIC", and
    unmanaged nodes never reach metalsmith; with it tripleo-ansible skips the ctlplane
    port and the chain fails (KeyError 'ctlplane')."""
    out = []
    for role, nodes in members_by_role(lab, stack).items():
        out.append({
            "name": role,
            "count": len(nodes),
            "hostname_format": hostname_format(role),
            "instances": [
                {
                    "hostname": n.hostname,
                    "name": n.hostname,
                    "managed": False,
                    "networks": [{"network": lab.ctlplane.network, "fixed_ip": ip(n)}],
                }
                for n in nodes
            ],
        })
    return out


def deployed_server_environment(lab: Lab, stack: Stack) -> dict[str, Any]:
    """Path B: the environment `openstack overcloud node provision` writes for these
    nodes, the control-plane VIP that `network vip provision` would add, and the
    ctlplane parameters a deployment without isolated networks needs."""
    cp = lab.ctlplane
    cidr = str(cp.cidr)
    params: dict[str, Any] = {}
    hostname_map: dict[str, str] = {}
    port_map: dict[str, Any] = {}
    node_port_map: dict[str, Any] = {}
    for role, nodes in members_by_role(lab, stack).items():
        params[f"{role}Count"] = len(nodes)
        params[f"{role}HostnameFormat"] = hostname_format(role)
        for index, node in enumerate(nodes):
            hostname_map[f"{stack.name}-{role_word(role)}-{index}"] = node.hostname
            # subnets and network are what deployed-neutron-port.yaml hands on as the
            # server's ctlplane `addresses` (THT reads the subnet's cidr from there)
            port_map[f"{node.hostname.lower()}-{cp.network}"] = {
                "fixed_ips": [{"ip_address": ip(node)}],
                "subnets": [{"cidr": cidr}],
                "network": {"tags": [cidr]},
            }
            node_port_map[node.hostname.lower()] = {
                cp.network: {
                    "ip_address": ip(node),
                    "ip_address_uri": ip(node),
                    "ip_subnet": f"{ip(node)}/{cp.cidr.prefixlen}",
                }
            }
    params["HostnameMap"] = hostname_map
    params["DeployedServerPortMap"] = port_map
    params["NodePortMap"] = node_port_map
    params["ControlPlaneVipData"] = {
        "fixed_ips": [{"ip_address": control_plane_vips(lab)[stack.name]}],
        "name": CONTROL_VIP_NAME,
        "network": {"tags": [cidr]},
        "subnets": [{"ip_version": 4}],
    }
    params["VipPortMap"] = {}  # no isolated networks, no other VIPs
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
            "OS::TripleO::Network::Ports::ControlPlaneVipPort": DEPLOYED_VIP_CTLPLANE,
        },
    }


def availability_zone_environment(stack: Stack) -> dict[str, Any]:
    """An edge site's own zone, named after the stack, as TripleO's DCN guide sets it
    (next to THT's environments/dcn-storage.yaml, which leaves the names empty or `dcn`)."""
    return {"parameter_defaults": {
        "NovaComputeAvailabilityZone": stack.name,
        "NovaCrossAZAttach": False,
        "CinderStorageAvailabilityZone": stack.name,
        "CinderVolumeCluster": stack.name,
        "GlanceBackendID": stack.name,
    }}
