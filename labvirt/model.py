"""The lab model: everything about a lab decided from its layout, deterministically.

Pure data, no I/O and no libvirt: names, sizes, disks, MACs, ctlplane addresses, ports and
stack membership are all settled here, so that the same layout (and the same stack
assignments) always gives the same lab.
"""

from __future__ import annotations

import hashlib
import ipaddress
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from labvirt.errors import InputError, LayoutError, Location
from labvirt.layout.spec import GIB, LayoutSpec, VmSpec, node_hostname

OSD_DEFAULT_BYTES = 50 * GIB
# Ports for loopback forwards: one block of this many per lab.
PORT_BLOCK = 100
# The user RHOSO 18's data plane logs in as (the NodeSet's default ansibleUser): every lab node
# has it, with the lab's key and passwordless sudo, so the same lab serves TripleO and EDPM.
EDPM_USER = "cloud-admin"


@dataclass(frozen=True)
class Disk:
    """One disk of a node. `volume` is the libvirt volume (file) name in the lab's pool."""

    role: str  # "root", "osd-0", ..., "swap"
    volume: str
    size_bytes: int
    target: str  # vda, vdb, ...
    format: str = "qcow2"
    iotune: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Nic:
    network: str  # the layout's network name (ctlplane, default, ...)
    mac: str


@dataclass(frozen=True)
class Node:
    hostname: str  # oc0-ceph-3, undercloud
    vm_name: str  # the vms entry: ceph-3
    overcloud: int | None  # None for the undercloud
    domain: str  # lab-oc0-ceph-3
    cpu: int
    memory_kib: int
    disks: tuple[Disk, ...]
    nics: tuple[Nic, ...]
    boot: str  # image | pxe
    ctlplane_ip: ipaddress.IPv4Address | None
    ssh_port: int | None  # loopback forward port when access is "forward"
    mgmt_mac: str | None  # MAC of the user-mode NIC carrying the forward

    @property
    def is_undercloud(self) -> bool:
        return self.overcloud is None

    @property
    def memory_mib(self) -> int:
        return self.memory_kib // 1024


@dataclass(frozen=True)
class Network:
    name: str  # layout name
    libvirt_name: str
    bridge: str
    forward: str  # isolated | nat
    address: ipaddress.IPv4Interface | None  # the host's address on the bridge, if any
    dhcp_range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None
    is_ctlplane: bool


@dataclass(frozen=True)
class StackMember:
    node: str
    role: str


@dataclass(frozen=True)
class Stack:
    name: str
    role: str
    members: tuple[StackMember, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(m.node for m in self.members)

    def roles(self) -> list[str]:
        """Roles in this stack, in order of first appearance."""
        return list(dict.fromkeys(m.role for m in self.members))


@dataclass(frozen=True)
class Ctlplane:
    network: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    undercloud_ip: ipaddress.IPv4Address
    dns: tuple[ipaddress.IPv4Address, ...]
    host_ip: ipaddress.IPv4Address
    dns_domain: str


@dataclass(frozen=True)
class Assignment:
    """A stack assignment kept in the lab's state: `stack` None means unassigned."""

    stack: str | None
    role: str | None = None


@dataclass(frozen=True)
class Lab:
    name: str
    prefix: str
    uri: str
    domain_type: str
    uefi: bool
    machine: str
    basedir: str
    pool_name: str
    pool_path: str
    console_dir: str
    image: str | None
    access: str  # bridge | forward
    ssh_user: str
    ssh_key: str | None
    ctlplane: Ctlplane
    nodes: tuple[Node, ...]
    networks: tuple[Network, ...]
    stacks: tuple[Stack, ...]
    sources: tuple[str, ...]
    extra_users: tuple[tuple[str, tuple[str, ...]], ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def node(self, hostname: str) -> Node:
        for n in self.nodes:
            if n.hostname == hostname:
                return n
        raise unknown_name("node", hostname, [n.hostname for n in self.nodes])

    def stack(self, name: str) -> Stack:
        for s in self.stacks:
            if s.name == name:
                return s
        raise unknown_name("stack", name, [s.name for s in self.stacks])

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def stack_of(self, hostname: str) -> tuple[str, str] | None:
        """(stack, role) of a node, or None when it is in no stack."""
        for s in self.stacks:
            for m in s.members:
                if m.node == hostname:
                    return s.name, m.role
        return None

    @property
    def overcloud_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.is_undercloud)

    def select(self, stack: str | None = None, nodes: tuple[str, ...] = ()) -> tuple[Node, ...]:
        """The nodes a command works on: a stack's, the named ones, or all of them."""
        if stack and nodes:
            raise InputError("give either --stack or node names, not both")
        if stack:
            return tuple(self.node(h) for h in self.stack(stack).nodes)
        if nodes:
            return tuple(self.node(h) for h in dict.fromkeys(nodes))
        return self.nodes


def unknown_name(kind: str, name: str, known: list[str]) -> InputError:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = (f"did you mean {close[0]!r}?" if close
            else f"known {kind}s: {', '.join(known) or 'none'}")
    return InputError(f"unknown {kind} {name!r}", hint)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("/".join(parts).encode()).digest()


def deterministic_mac(lab: str, *parts: str, taken: set[str]) -> str:
    """A locally administered MAC (QEMU's 52:54:00 prefix) derived from lab and NIC identity."""
    for attempt in range(1000):
        tail = _digest(lab, *parts, str(attempt))[:3]
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in tail)
        if mac not in taken:
            taken.add(mac)
            return mac
    raise AssertionError("no free MAC after 1000 attempts")  # pragma: no cover


def default_port_base(lab: str) -> int:
    """A port block derived from the lab name, so that two labs rarely collide."""
    block = int.from_bytes(_digest("ports", lab)[:4], "big") % 380
    return 20000 + block * PORT_BLOCK


def bridge_name(lab: str, index: int) -> str:
    return f"lv{_digest('bridge', lab).hex()[:6]}-{index}"


def _disk_target(index: int) -> str:
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            break
    return "vd" + letters


def _layout_stacks(spec: LayoutSpec) -> tuple[list[tuple[str, str]], dict[str, Assignment]]:
    order = [(s.name, s.role) for s in spec.labvirt.stacks]
    membership = {m.node: Assignment(s.name, m.role)
                  for s in spec.labvirt.stacks for m in s.members}
    return order, membership


def resolve_stacks(
    spec: LayoutSpec,
    hostnames: list[str],
    extra_stacks: Mapping[str, str] | None = None,
    assignments: Mapping[str, Assignment] | None = None,
) -> tuple[Stack, ...]:
    """Layout stacks, with stacks and assignments from the lab's state applied on top."""
    order, membership = _layout_stacks(spec)
    roles = dict(order)
    for name, role in (extra_stacks or {}).items():
        if name not in roles:
            order.append((name, role))
            roles[name] = role
    for node, a in (assignments or {}).items():
        if node not in hostnames:
            continue  # a node that left the layout: nothing to assign
        if a.stack is None:
            membership.pop(node, None)
        elif a.stack in roles:
            membership[node] = a
    stacks = []
    for name, role in order:
        members = tuple(
            StackMember(h, membership[h].role or role)
            for h in hostnames
            if h in membership and membership[h].stack == name
        )
        stacks.append(Stack(name, role, members))
    return tuple(stacks)


def _with_edpm_user(ssh_user: str, users: tuple[tuple[str, tuple[str, ...]], ...]
                    ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The layout's extra users, plus EDPM_USER (lab key only) unless the layout has it."""
    if ssh_user == EDPM_USER or any(name == EDPM_USER for name, _ in users):
        return users
    return (*users, (EDPM_USER, ()))


def build_lab(
    spec: LayoutSpec,
    extra_stacks: Mapping[str, str] | None = None,
    assignments: Mapping[str, Assignment] | None = None,
) -> Lab:
    lv = spec.labvirt
    name = lv.name or spec.vm_prefix
    prefix = spec.vm_prefix
    cp = lv.ctlplane
    access = lv.access
    if access == "auto":
        access = "bridge" if lv.uri.startswith("qemu:///system") else "forward"
    port_base = lv.forward_base_port or default_port_base(name)
    res = lv.resize

    ordered: list[tuple[int | None, VmSpec]] = []
    for vm in spec.vms:
        if vm.is_undercloud:
            ordered.append((None, vm))
    for n in range(spec.overclouds):
        for vm in spec.vms:
            if not vm.is_undercloud:
                ordered.append((n, vm))

    # ctlplane addresses: fixed ones first, then the rest in order from first_ip
    taken = {cp.gateway, cp.host_ip, cp.undercloud_ip}
    taken |= {o.ctlplane_ip for o in lv.nodes.values() if o.ctlplane_ip}
    # arithmetic from first_ip on: walking cidr.hosts() from the start of a /8 takes seconds
    last_host = int(cp.cidr.broadcast_address) - 1
    start = max(int(cp.first_ip), int(cp.cidr.network_address) + 1)
    free = (a for a in map(ipaddress.IPv4Address, range(start, last_host + 1))
            if a not in taken)
    undercloud_given = False
    macs: set[str] = set()
    for _, vm in ordered:
        for iface in vm.interfaces:
            if lv.honour_macs and iface.mac:
                macs.add(iface.mac)

    nodes: list[Node] = []
    for index, (n, vm) in enumerate(ordered):
        host = node_hostname(vm.name, n)
        domain = f"{prefix}-{host}"
        override = lv.nodes.get(host)
        if n is None and not undercloud_given:
            ip: ipaddress.IPv4Address | None = cp.undercloud_ip
            undercloud_given = True
        elif override and override.ctlplane_ip:
            ip = override.ctlplane_ip
        else:
            ip = next(free, None)
            if ip is None:
                # read_layout counts the addresses first; this only guards the model's use
                raise LayoutError(
                    f"the ctlplane network {cp.cidr} has no free address left for {host} "
                    f"(addresses are given from {cp.first_ip} on)",
                    Location(spec.sources[-1] if spec.sources else "<layout>", None,
                             "labvirt.ctlplane"),
                    "use a larger cidr or a lower first_ip",
                )
        root = res.disksize_bytes or vm.disksize_gb * GIB
        disks = [Disk("root", f"{domain}.qcow2", root, "", iotune=vm.iotune)]
        if vm.name.startswith("ceph-"):
            for i in range(spec.num_osds):
                disks.append(Disk(f"osd-{i}", f"{domain}-osd-{i}.qcow2",
                                  res.osd_bytes or OSD_DEFAULT_BYTES, ""))
        if vm.swap_bytes:
            disks.append(Disk("swap", f"{domain}-swap.qcow2", res.swap_bytes or vm.swap_bytes, ""))
        disks = [
            Disk(d.role, d.volume, d.size_bytes, _disk_target(i), d.format, d.iotune)
            for i, d in enumerate(disks)
        ]
        nics = []
        for j, iface in enumerate(vm.interfaces):
            if lv.honour_macs and iface.mac:
                mac = iface.mac
            else:
                mac = deterministic_mac(name, host, str(j), taken=macs)
            nics.append(Nic(iface.network, mac))
        memory_bytes = res.memory_bytes or vm.memory_mb * 1000**2
        boot = (override.boot if override and override.boot else None) or lv.boot
        forward = access == "forward"
        nodes.append(Node(
            hostname=host, vm_name=vm.name, overcloud=n, domain=domain,
            cpu=res.cpu or vm.cpu,
            memory_kib=memory_bytes // 1024, disks=tuple(disks), nics=tuple(nics), boot=boot,
            ctlplane_ip=ip, ssh_port=port_base + index if forward else None,
            mgmt_mac=deterministic_mac(name, host, "mgmt", taken=macs) if forward else None,
        ))
    if access == "forward" and len(nodes) > PORT_BLOCK:
        raise InputError(f"a lab reached by port forwards has at most {PORT_BLOCK} nodes; "
                         f"{', '.join(spec.sources) or 'the layout'} make(s) {len(nodes)}",
                         "use fewer vms entries or overclouds, or access: bridge with "
                         "qemu:///system")

    networks = []
    for i, net in enumerate(lv.networks.values()):
        is_cp = net.name == cp.network
        address = None
        dhcp = None
        if is_cp:
            if access == "bridge":
                address = ipaddress.IPv4Interface(f"{cp.host_ip}/{cp.cidr.prefixlen}")
        elif net.cidr is not None:
            first = net.cidr.network_address + 1  # never list(cidr.hosts()) of a /8
            address = ipaddress.IPv4Interface(f"{first}/{net.cidr.prefixlen}")
            if net.dhcp:
                dhcp = (first + 1, net.cidr.broadcast_address - 1)
        networks.append(Network(
            name=net.name, libvirt_name=f"{name}-{net.name}",
            bridge=net.bridge or bridge_name(name, i), forward=net.forward,
            address=address, dhcp_range=dhcp, is_ctlplane=is_cp,
        ))

    hostnames = [n.hostname for n in nodes if not n.is_undercloud]
    stacks = resolve_stacks(spec, hostnames, extra_stacks, assignments)
    # normalised: libvirt reports paths that way, and chains are matched by path
    pool_path = posixpath.normpath(lv.pool_path or f"{spec.basedir}/workload/{name}")
    return Lab(
        name=name, prefix=prefix, uri=lv.uri, domain_type=lv.domain_type, uefi=spec.uefi,
        machine="q35" if spec.uefi else "pc", basedir=spec.basedir,
        pool_name=f"labvirt-{name}", pool_path=pool_path,
        console_dir=lv.console_dir or pool_path,
        image=lv.image, access=access, ssh_user=lv.ssh_user, ssh_key=lv.ssh_key,
        ctlplane=Ctlplane(cp.network, cp.cidr, cp.gateway, cp.undercloud_ip, cp.dns,
                          cp.host_ip, cp.dns_domain),
        nodes=tuple(nodes), networks=tuple(networks), stacks=stacks,
        sources=spec.sources,
        extra_users=_with_edpm_user(lv.ssh_user, tuple((u.name, u.keys) for u in lv.users)),
        warnings=spec.warnings,
    )
