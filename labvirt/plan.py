"""What `up` would do: the difference between the lab model and what libvirt has.

Pure: takes the model, the rendered definitions and an `Observed` snapshot of the
hypervisor, and returns a printable `Plan` of actions, conflicts and drift. Nothing here
talks to libvirt; the executor carries a plan out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from labvirt.model import Lab, Node
from labvirt.render import (
    BootFiles,
    VolumeView,
    domain_view,
    network_view,
    pool_uuid,
    render_domain_xml,
    render_network_xml,
    render_node_metadata,
    render_pool_xml,
    render_volume_xml,
)
from labvirt.virt import Observed, ObservedDomain, Owner


@dataclass(frozen=True)
class Upload:
    """A volume whose content labvirt provides (kernel, initrd, seed ISO)."""

    volume: str
    size: int
    node: str | None  # None: shared by the lab


@dataclass(frozen=True)
class Action:
    kind: str
    target: str
    node: str | None = None
    detail: str = ""
    xml: str = field(default="", repr=False, compare=False)

    def describe(self) -> str:
        text = f"{self.kind} {self.target}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class Drift:
    node: str
    changes: tuple[str, ...]


@dataclass
class Plan:
    lab: str
    actions: list[Action] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.actions

    def for_node(self, hostname: str) -> list[Action]:
        return [a for a in self.actions if a.node == hostname]

    @property
    def shared(self) -> list[Action]:
        return [a for a in self.actions if a.node is None]


@dataclass(frozen=True)
class Provision:
    """Decisions made before planning: resolved domain type, firmware, boot artifacts."""

    domain_type: str
    loader: str
    nvram_template: str
    boot: BootFiles | None = None
    uploads: tuple[Upload, ...] = ()
    base_volume: str | None = None  # path of the base image volume for OS-disk overlays
    base_format: str = "qcow2"
    seeds: bool = False


def _node_disk_actions(lab: Lab, node: Node, obs: Observed, prov: Provision,
                       recreate: bool) -> list[Action]:
    pool = obs.pool(lab.pool_name)
    actions = []
    for disk in node.disks:
        have = pool.volume(disk.volume) if pool else None
        if have is not None and not recreate:
            continue
        backing = prov.base_volume if disk.role == "root" and node.boot == "image" else None
        detail = f"{disk.size_bytes // 1024**2} MiB {disk.format}"
        if backing:
            detail += " overlay"
        xml = render_volume_xml(VolumeView(disk.volume, disk.size_bytes, disk.format, backing,
                                           prov.base_format))
        actions.append(Action("create-volume", disk.volume, node.hostname, detail, xml))
    return actions


def domain_drift(lab: Lab, node: Node, dom: ObservedDomain, prov: Provision,
                 expected_hash: str) -> list[str]:
    """Differences between the model and the live definition, in words."""
    hw = dom.hardware()
    changes = []
    if hw["cpu"] != node.cpu:
        changes.append(f"cpu {hw['cpu']} -> {node.cpu}")
    if hw["memory_kib"] != node.memory_kib:
        changes.append(f"memory {hw['memory_kib'] // 1024} -> {node.memory_mib} MiB")
    want_nics = [[lab.network(n.network).libvirt_name, n.mac] for n in node.nics]
    if hw["nics"] != want_nics:
        changes.append(f"nics {len(hw['nics'])} -> {len(want_nics)}"
                       if len(hw["nics"]) != len(want_nics) else "nic networks or MACs changed")
    want_targets = sorted(d.target for d in node.disks)
    if hw["targets"] != want_targets:
        changes.append(f"disks {len(hw['targets'])} -> {len(want_targets)}")
    if hw["type"] != prov.domain_type:
        changes.append(f"domain type {hw['type']} -> {prov.domain_type}")
    if not str(hw["machine"]).startswith(lab.machine):
        changes.append(f"machine {hw['machine']} -> {lab.machine}")
    if not changes and dom.owner and dom.owner.hash != expected_hash:
        changes.append("definition changed (boot, firmware, disk sizes or ports)")
    return changes


def _whose(owner: Owner | None) -> str:
    return f"it belongs to labvirt lab {owner.lab!r}" if owner else "it has no labvirt metadata"


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n else ""


def _overlaps(a: str, b: str) -> bool:
    return ipaddress.IPv4Interface(a).network.overlaps(ipaddress.IPv4Interface(b).network)


def make_plan(
    lab: Lab,
    obs: Observed,
    prov: Provision,
    *,
    recreate: tuple[str, ...] = (),
    host_routes: tuple[tuple[str, str], ...] = (),
    trusted_uploads: frozenset[str] = frozenset(),
    pool_paths: dict[str, tuple[str, str]] | None = None,
) -> Plan:
    """`host_routes`: (cidr, device) of the hypervisor's routes, when it is this machine.
    `trusted_uploads`: uploaded volumes known complete (referenced by a defined domain)."""
    plan = Plan(lab.name)
    ours = {n.libvirt_name for n in lab.networks}
    our_bridges = {n.bridge for n in lab.networks}

    # --- networks: ownership, collisions, then create/start
    for net in lab.networks:
        view = network_view(lab, net)
        have = obs.network(net.libvirt_name)
        if have is not None and not have.ours(lab.name):
            plan.conflicts.append(
                f"network {net.libvirt_name} already exists and is not this lab's "
                f"({_whose(have.owner)}); labvirt will not touch it. Give this lab another "
                "labvirt.name")
            continue
        for other in obs.networks:
            if other.name in ours:
                continue
            if other.bridge == net.bridge:
                plan.conflicts.append(
                    f"bridge {net.bridge} of network {net.libvirt_name} is used by network "
                    f"{other.name}; set labvirt.networks.{net.name}.bridge to a free name")
            if net.address:
                for addr in other.addresses:
                    if _overlaps(str(net.address), addr):
                        plan.conflicts.append(
                            f"network {net.libvirt_name} ({net.address.network}) overlaps "
                            f"network {other.name} ({addr}); change the cidr in the layout")
        if net.address:
            for cidr, dev in host_routes:
                if dev in our_bridges:
                    continue
                if cidr != "0.0.0.0/0" and ipaddress.IPv4Network(cidr).overlaps(
                        net.address.network):
                    plan.conflicts.append(
                        f"network {net.libvirt_name} ({net.address.network}) overlaps the host "
                        f"route {cidr} on {dev}; change the cidr in the layout")
        if have is None:
            plan.actions.append(Action("create-network", net.libvirt_name, None,
                                       f"{net.forward}, bridge {net.bridge}",
                                       render_network_xml(view)))
        else:
            if have.owner and have.owner.hash != view.hash:
                plan.drift.append(Drift(f"network {net.libvirt_name}",
                                        ("bridge, address or DHCP changed; run `labvirt down` "
                                         "and `up` to apply",)))
            if not have.active:
                plan.actions.append(Action("start-network", net.libvirt_name))

    # --- pool
    pool = obs.pool(lab.pool_name)
    if pool is not None and pool.uuid != pool_uuid(lab):
        plan.conflicts.append(
            f"storage pool {lab.pool_name} exists and is not this lab's (uuid {pool.uuid}); "
            "labvirt will not touch it. Give this lab another labvirt.name")
    for path, (pname, _uuid) in (pool_paths or {}).items():
        if path.rstrip("/") == lab.pool_path.rstrip("/") and pname != lab.pool_name:
            plan.conflicts.append(
                f"the pool directory {lab.pool_path} already belongs to storage pool {pname}; "
                "set labvirt.pool_path to another directory")
    if pool is None:
        plan.actions.append(Action("create-pool", lab.pool_name, None, lab.pool_path,
                                   render_pool_xml(lab)))
    elif not pool.active:
        plan.actions.append(Action("start-pool", lab.pool_name))

    # --- shared uploads (kernel, initrd)
    for up in prov.uploads:
        if up.node is not None:
            continue
        have_vol = pool.volume(up.volume) if pool else None
        if have_vol is None or up.volume not in trusted_uploads:
            plan.actions.append(Action("upload", up.volume, None, _size(up.size)))

    # --- nodes
    recreate_set = set(recreate)
    for node in lab.nodes:
        dom = obs.domain(node.domain)
        if dom is not None and not dom.ours(lab.name):
            plan.conflicts.append(
                f"domain {node.domain} already exists and is not this lab's "
                f"({_whose(dom.owner)}); labvirt will not touch it. Set vm_prefix in the "
                "layout to give this lab other domain names")
            continue
        view = domain_view(lab, node, domain_type=prov.domain_type, boot=prov.boot,
                           seed=prov.seeds, loader=prov.loader,
                           nvram_template=prov.nvram_template)
        xml = render_domain_xml(view)
        rebuild = node.hostname in recreate_set and dom is not None
        if dom is not None:
            changes = domain_drift(lab, node, dom, prov, view.hash)
            if changes and not rebuild:
                plan.drift.append(Drift(node.hostname, tuple(changes)))
            if rebuild:
                plan.actions.append(Action("remove-domain", node.domain, node.hostname,
                                           "recreate: " + ("; ".join(changes) or "requested")))
        node_actions = _node_disk_actions(lab, node, obs, prov, rebuild)
        for up in prov.uploads:
            if up.node != node.hostname:
                continue
            have_vol = pool.volume(up.volume) if pool else None
            if rebuild or have_vol is None or up.volume not in trusted_uploads:
                node_actions.append(Action("upload", up.volume, node.hostname, _size(up.size)))
        if dom is None or rebuild:
            node_actions.append(Action("define-domain", node.domain, node.hostname,
                                       f"{node.cpu} vCPU, {node.memory_mib} MiB", xml))
        elif dom.owner and (dom.owner.stack, dom.owner.role) != (view.stack, view.role):
            node_actions.append(Action("update-metadata", node.domain, node.hostname,
                                       f"stack {view.stack or '-'}, role {view.role or '-'}",
                                       render_node_metadata(view)))
        if node.boot == "image" and (dom is None or rebuild or not dom.running):
            node_actions.append(Action("start-domain", node.domain, node.hostname))
        if not node_actions and not rebuild:
            plan.unchanged.append(node.hostname)
        plan.actions.extend(node_actions)
    unknown = recreate_set - {n.hostname for n in lab.nodes}
    for name in sorted(unknown):
        plan.conflicts.append(f"--recreate names unknown node {name!r}")
    return plan
