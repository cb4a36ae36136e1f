"""Validated layout: the typed form of the merged overrides files.

`read_layout` checks every key labvirt reads and raises `LayoutErrors` listing all
problems at once, each with file, line and key. Nothing here decides names, MACs or
addresses: that is the model's job (labvirt.model).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from labvirt.errors import LayoutError, LayoutErrors, Location
from labvirt.layout.loader import Path_, RawLayout, format_path

GIB = 1024**3
MIB = 1024**2

# RFC 1123 label: what may become a hostname, a libvirt name and a file name.
# Anchored with \Z, not $: `$` also matches before a trailing newline ("ceph-0\n").
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")
ROLE_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}\Z")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")
URI_RE = re.compile(r"^[a-z][a-z0-9+]*://[^\s'\"<>]*\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[kmgt]|B)?\s*\Z")

IOTUNE_KEYS = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
    "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
    "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max", "size_iops_sec",
)  # fmt: skip

LABVIRT_KEYS = (
    "name", "uri", "domain_type", "boot", "image", "access", "forward_base_port", "pool_path",
    "ssh", "ctlplane", "networks", "nodes", "resize", "honour_macs", "stacks", "console_dir",
)  # fmt: skip
SSH_KEYS = ("user", "key", "users")
CTLPLANE_KEYS = ("network", "cidr", "gateway", "undercloud_ip", "first_ip", "dns", "host_ip",
                 "dns_domain")
NETWORK_KEYS = ("forward", "cidr", "dhcp", "bridge")
NODE_KEYS = ("ctlplane_ip", "boot")
RESIZE_KEYS = ("cpu", "memory", "disksize", "osd_size", "swap")
STACK_KEYS = ("name", "role", "nodes")
VM_KEYS = ("name", "cpu", "memory", "disksize", "swap", "iotune", "interfaces", "autostart")
DOMAIN_TYPES = ("auto", "kvm", "qemu")
BOOT_MODES = ("image", "pxe")
ACCESS_MODES = ("auto", "bridge", "forward")
FORWARD_MODES = ("isolated", "nat")


@dataclass(frozen=True)
class InterfaceSpec:
    network: str
    mac: str | None


@dataclass(frozen=True)
class VmSpec:
    name: str
    cpu: int
    memory_mb: int
    disksize_gb: int
    swap_bytes: int | None
    iotune: tuple[tuple[str, int], ...]
    interfaces: tuple[InterfaceSpec, ...]
    autostart: bool | None
    path: Path_

    @property
    def is_undercloud(self) -> bool:
        return self.name.startswith("undercloud")


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    forward: str
    cidr: ipaddress.IPv4Network | None
    dhcp: bool
    bridge: str | None


@dataclass(frozen=True)
class CtlplaneSpec:
    network: str
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    undercloud_ip: ipaddress.IPv4Address
    first_ip: ipaddress.IPv4Address
    dns: tuple[ipaddress.IPv4Address, ...]
    host_ip: ipaddress.IPv4Address
    dns_domain: str


@dataclass(frozen=True)
class NodeOverride:
    ctlplane_ip: ipaddress.IPv4Address | None = None
    boot: str | None = None


@dataclass(frozen=True)
class Resize:
    cpu: int | None = None
    memory_bytes: int | None = None
    disksize_bytes: int | None = None
    osd_bytes: int | None = None
    swap_bytes: int | None = None


@dataclass(frozen=True)
class StackMemberSpec:
    node: str
    role: str | None


@dataclass(frozen=True)
class StackSpec:
    name: str
    role: str
    members: tuple[StackMemberSpec, ...]


@dataclass(frozen=True)
class UserSpec:
    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class LabvirtSpec:
    name: str | None
    uri: str
    domain_type: str
    boot: str
    image: str | None
    access: str
    forward_base_port: int | None
    pool_path: str | None
    console_dir: str | None
    ssh_user: str
    ssh_key: str | None
    users: tuple[UserSpec, ...]
    ctlplane: CtlplaneSpec
    networks: dict[str, NetworkSpec]
    nodes: dict[str, NodeOverride]
    resize: Resize
    honour_macs: bool
    stacks: tuple[StackSpec, ...]


@dataclass(frozen=True)
class LayoutSpec:
    vms: tuple[VmSpec, ...]
    overclouds: int
    vm_prefix: str
    num_osds: int
    uefi: bool
    basedir: str
    labvirt: LabvirtSpec
    sources: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())


def node_hostname(vm_name: str, overcloud: int | None) -> str:
    """tripleo-lab's naming: overcloud VMs are instantiated as `oc{N}-<name>`."""
    return vm_name if overcloud is None else f"oc{overcloud}-{vm_name}"


def parse_size(value: Any, default_unit: int) -> int:
    """'10G', '512MiB', '2GiB' or a bare number in `default_unit` bytes -> bytes.

    Single letters follow qemu-img (`10G` is 10 GiB), as tripleo-lab passes them there.
    `MB`/`GB` are decimal, as libvirt reads them.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size, got a boolean")
    if isinstance(value, int):
        return value * default_unit
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 10G or 512MiB, got {type(value).__name__}")
    m = SIZE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size; write it like 10G, 512MiB or 2GiB")
    number = float(m.group(1))
    unit = (m.group(2) or "").upper()
    factors = {
        "": default_unit, "B": 1,
        "K": 1024, "KIB": 1024, "KB": 1000,
        "M": MIB, "MIB": MIB, "MB": 1000**2,
        "G": GIB, "GIB": GIB, "GB": 1000**3,
        "T": 1024**4, "TIB": 1024**4, "TB": 1000**4,
    }  # fmt: skip
    return int(number * factors[unit])


class Checker:
    """Reads typed values out of the raw layout, collecting errors with their location."""

    def __init__(self, raw: RawLayout) -> None:
        self.raw = raw
        self.errors: list[LayoutError] = []
        self.warnings: list[str] = []

    def error(self, path: Path_, message: str, hint: str | None = None) -> None:
        self.errors.append(LayoutError(message, self.locate(path), hint))

    def warn(self, path: Path_, message: str) -> None:
        self.warnings.append(f"{self.locate(path)}: {message}")

    def locate(self, path: Path_) -> Location:
        """Where `path` was written; inside a vms entry, also which VM (`vms[3]` alone makes
        the reader count entries)."""
        loc = self.raw.locate(path)
        if len(path) > 2 and path[0] == "vms" and isinstance(path[1], int) and path[2] != "name":
            entry = self.get(path[:2])
            vm = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(vm, str) and HOSTNAME_RE.match(vm):
                return Location(loc.file, loc.line, f"{loc.key} (VM {vm})")
        return loc

    def get(self, path: Path_) -> Any:
        value: Any = self.raw.data
        for part in path:
            if (isinstance(value, dict) and part in value) or (
                    isinstance(value, list) and isinstance(part, int) and part < len(value)):
                value = value[part]
            else:
                return None
        return value

    def has(self, path: Path_) -> bool:
        parent = self.get(path[:-1])
        last = path[-1]
        if isinstance(parent, list):
            return isinstance(last, int) and 0 <= last < len(parent)
        return isinstance(parent, dict) and last in parent

    def mapping(self, path: Path_, known: tuple[str, ...] | None, strict: bool) -> dict[str, Any]:
        value = self.get(path)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, got {describe(value)}")
            return {}
        if known is not None:
            for key in value:
                if key in known:
                    continue
                close = difflib.get_close_matches(str(key), known, n=1)
                guess = (f"did you mean {close[0]!r}?" if close
                         else f"known keys: {', '.join(known)}")
                if strict:
                    self.error((*path, key), f"unknown key {key!r}", guess)
                else:
                    self.warn((*path, key), f"key {key!r} is not read by labvirt ({guess})")
        return value

    def integer(self, path: Path_, default: int | None, minimum: int = 1,
                maximum: int | None = None) -> int | None:
        if not self.has(path) or self.get(path) is None:
            return default
        value = self.get(path)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        hint = _example_hint(path)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be a whole number, got {describe(value)}", hint)
            return default
        if value < minimum:
            what = "positive" if minimum == 1 else f"at least {minimum}"
            self.error(path, f"must be {what}, got {value}", hint)
            return default
        if maximum is not None and value > maximum:
            self.error(path, f"must be at most {maximum}, got {value}", hint)
            return default
        return value

    def boolean(self, path: Path_, default: bool) -> bool:
        if not self.has(path) or self.get(path) is None:
            return default
        value = self.get(path)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, got {describe(value)}")
            return default
        return value

    def string(self, path: Path_, default: str | None, pattern: re.Pattern[str] | None = None,
               what: str = "", choices: tuple[str, ...] | None = None) -> str | None:
        if not self.has(path) or self.get(path) is None:
            return default
        value = self.get(path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.error(path, f"must be a string, got {describe(value)}")
            return default
        if CONTROL_RE.search(value):
            # a newline in a path would start a new directive in ssh_config and the like
            self.error(path, f"{value!r} contains a control character (newline, tab, ...)",
                       "write it on one line, without control characters")
            return default
        if choices is not None and value not in choices:
            self.error(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        if pattern is not None and not pattern.match(value):
            self.error(path, f"{value!r} is not a valid {what}", _pattern_hint(what))
            return default
        return value

    def size(self, path: Path_, default_unit: int) -> int | None:
        if not self.has(path) or self.get(path) is None:
            return None
        try:
            value = parse_size(self.get(path), default_unit)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if value <= 0:
            if path[0] == "labvirt":
                hint = "remove it to keep each VM's own size"
            elif path[-1] == "swap":
                hint = "remove swap: to give the VM no swap disk"
            else:
                hint = "write it like 10G or 512MiB"
            self.error(path, f"must be larger than zero, got {self.get(path)!r}", hint)
            return None
        return value

    def address(self, path: Path_, default: str | None) -> ipaddress.IPv4Address | None:
        value = self.get(path) if self.has(path) else default
        if value is None:
            return None
        try:
            return ipaddress.IPv4Address(str(value))
        except ValueError:
            self.error(path, f"{value!r} is not an IPv4 address")
            return None

    def network(self, path: Path_, default: str | None) -> ipaddress.IPv4Network | None:
        value = self.get(path) if self.has(path) else default
        if value is None:
            return None
        try:
            net = ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            self.error(path, f"{value!r} is not an IPv4 network in CIDR form ({exc})",
                       "write it like 192.168.24.0/24")
            return None
        if net.num_addresses < 8:
            self.error(path, f"{net} is too small for a lab network", "use a /29 or larger")
            return None
        return net

    def list_(self, path: Path_, hint: str | None = None) -> list[Any]:
        value = self.get(path)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list, got {describe(value)}", hint)
            return []
        return value


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    kind = {dict: "a mapping", list: "a list", bool: "a boolean", str: "a string",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    return f"{kind} ({value!r})"


# Examples shown when a number is wrong, by the key's name.
_EXAMPLES = {
    "cpu": "cpu: 2 (vCPUs)",
    "memory": "memory: 4096 (MB of 10^6 bytes, libvirt's unit, as tripleo-lab writes it)",
    "disksize": "disksize: 100 (GB)",
    "num_osds": "num_osds: 4, or 0 for no OSD disks",
    "overclouds": "overclouds: 1",
    "forward_base_port": "forward_base_port: 20000",
    "value": "{tune: total_iops_sec, value: 500}",
}


def _example_hint(path: Path_) -> str | None:
    example = _EXAMPLES.get(str(path[-1])) if path else None
    return f"for example {example}" if example else None


def _pattern_hint(what: str) -> str | None:
    return {
        "hostname": "use letters, digits and '-' (at most 63, not starting or ending with '-')",
        "stack name": "a stack name becomes a Heat stack, an Ansible group and a directory: "
                      "use letters, digits and '-' (at most 63, not starting or ending with '-')",
        "name": "use letters, digits, '-' and '_' (at most 40)",
        "role name": "TripleO role names look like Controller, CephAll, DistributedComputeHCI",
        "MAC address": "write it like 52:54:00:12:34:56",
        "user name": "use lower-case letters, digits, '-' and '_'",
        "bridge name": "at most 15 letters, digits, '-', '_' or '.'",
        "libvirt URI": "for example qemu:///system or qemu+ssh://host/system",
    }.get(what)


def _read_vm(c: Checker, i: int) -> VmSpec | None:
    path: Path_ = ("vms", i)
    entry = c.get(path)
    if not isinstance(entry, dict):
        c.error(path, "each vms entry must be a mapping with at least 'name', "
                f"got {describe(entry)}",
                f"write it as '- name: {entry}'" if isinstance(entry, str) else None)
        return None
    c.mapping(path, VM_KEYS, strict=False)
    if "name" not in entry:
        c.error(path, "vms entry has no 'name'", "every VM needs a name, like ceph-0")
        return None
    name = c.string((*path, "name"), None, HOSTNAME_RE, "hostname")
    if name is None:
        return None
    cpu = c.integer((*path, "cpu"), 1, maximum=512) or 1
    memory = c.integer((*path, "memory"), 2048, maximum=4 * 1024 * 1024) or 2048
    disksize = c.integer((*path, "disksize"), 100, maximum=64 * 1024) or 100
    swap = c.size((*path, "swap"), GIB)
    iotune: list[tuple[str, int]] = []
    for j, tune in enumerate(c.list_((*path, "iotune"))):
        tpath: Path_ = (*path, "iotune", j)
        if not isinstance(tune, dict) or "tune" not in tune or "value" not in tune:
            c.error(tpath, "iotune items are mappings with 'tune' and 'value'",
                    "for example {tune: total_iops_sec, value: 500}")
            continue
        key = c.string((*tpath, "tune"), None, choices=IOTUNE_KEYS)
        val = c.integer((*tpath, "value"), None, minimum=0)
        if key is not None and val is not None:
            iotune.append((key, val))
    interfaces: list[InterfaceSpec] = []
    nics_hint = "for example interfaces: [{network: ctlplane}, {network: ctlplane}]"
    for j, item in enumerate(c.list_((*path, "interfaces"), nics_hint)):
        ipath: Path_ = (*path, "interfaces", j)
        if isinstance(item, str) or item is None:
            interfaces.append(InterfaceSpec("ctlplane", None))
            continue
        if not isinstance(item, dict):
            c.error(ipath, f"an interface is a mapping or a string, got {describe(item)}")
            continue
        network = c.string((*ipath, "network"), "ctlplane", HOSTNAME_RE, "hostname") or "ctlplane"
        mac = c.string((*ipath, "mac"), None, MAC_RE, "MAC address")
        interfaces.append(InterfaceSpec(network, mac.lower() if mac else None))
    autostart = c.boolean((*path, "autostart"), False) if c.has((*path, "autostart")) else None
    return VmSpec(name, cpu, memory, disksize, swap, tuple(iotune), tuple(interfaces),
                  autostart, path)


def _read_ctlplane(c: Checker) -> CtlplaneSpec:
    base: Path_ = ("labvirt", "ctlplane")
    c.mapping(base, CTLPLANE_KEYS, strict=True)
    cidr = c.network((*base, "cidr"), "192.168.24.0/24") or ipaddress.IPv4Network("192.168.24.0/24")
    hosts = list(cidr.hosts())
    gateway = c.address((*base, "gateway"), str(hosts[0])) or hosts[0]
    undercloud = c.address((*base, "undercloud_ip"), str(gateway)) or gateway
    first = c.address((*base, "first_ip"), str(hosts[min(29, len(hosts) - 1)]))
    host_ip = c.address((*base, "host_ip"), str(hosts[-1])) or hosts[-1]
    dns_raw = c.get((*base, "dns"))
    dns: list[ipaddress.IPv4Address] = []
    if dns_raw is None:
        dns = [undercloud]
    elif isinstance(dns_raw, list):
        for j in range(len(dns_raw)):
            a = c.address((*base, "dns", j), None)
            if a:
                dns.append(a)
    else:
        c.error((*base, "dns"), f"must be a list of addresses, got {describe(dns_raw)}")
    for key, addr in (("gateway", gateway), ("undercloud_ip", undercloud), ("first_ip", first),
                      ("host_ip", host_ip)):
        if addr is not None and addr not in cidr:
            c.error((*base, key), f"{addr} is outside the ctlplane network {cidr}")
        elif addr is not None and addr in (cidr.network_address, cidr.broadcast_address):
            c.error((*base, key), f"{addr} is the network or broadcast address of {cidr}")
    if host_ip in (gateway, undercloud):
        c.error((*base, "host_ip"), f"{host_ip} is already the gateway or undercloud address",
                "pick a free address for the hypervisor, such as the last one of the network")
    network = c.string((*base, "network"), "ctlplane", HOSTNAME_RE, "hostname") or "ctlplane"
    domain = c.string((*base, "dns_domain"), "localdomain",
                      re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z"),
                      "DNS domain") or "localdomain"
    return CtlplaneSpec(network, cidr, gateway, undercloud, first or hosts[0], tuple(dns),
                        host_ip, domain)


def _read_networks(c: Checker, used: list[str], ctlplane: CtlplaneSpec) -> dict[str, NetworkSpec]:
    base: Path_ = ("labvirt", "networks")
    declared = c.mapping(base, None, strict=True)
    out: dict[str, NetworkSpec] = {}
    names = list(dict.fromkeys([*used, *declared]))
    for name in names:
        path: Path_ = (*base, name)
        if name in declared:
            if not HOSTNAME_RE.match(str(name)):
                c.error(path, f"{name!r} is not a valid network name", _pattern_hint("hostname"))
                continue
            c.mapping(path, NETWORK_KEYS, strict=True)
        forward = c.string((*path, "forward"), "isolated", choices=FORWARD_MODES) or "isolated"
        cidr = c.network((*path, "cidr"), None) if c.get((*path, "cidr")) is not None else None
        dhcp = c.boolean((*path, "dhcp"), False)
        bridge = c.string((*path, "bridge"), None, BRIDGE_RE, "bridge name")
        if name == ctlplane.network:
            if cidr is not None:
                c.error((*path, "cidr"), "the ctlplane network's addressing is set in "
                        "labvirt.ctlplane.cidr", "move the value there")
            if forward != "isolated":
                c.error((*path, "forward"), "the ctlplane network must stay isolated: the "
                        "undercloud is its router", "remove forward from the ctlplane network")
            if dhcp:
                c.error((*path, "dhcp"), "the ctlplane network has no DHCP: the undercloud "
                        "serves it", "remove dhcp from the ctlplane network")
        if forward == "nat" and cidr is None:
            c.error(path, f"network {name!r} forwards with NAT and needs a cidr",
                    "add cidr: 192.168.123.0/24 (any free range)")
        if dhcp and cidr is None:
            c.error((*path, "dhcp"), f"network {name!r} has dhcp but no cidr")
        out[name] = NetworkSpec(name, forward, cidr, dhcp, bridge)
    for name in declared:
        if name not in used and name != ctlplane.network:
            c.warn((*base, name), f"network {name!r} is declared but no VM interface uses it")
    return out


def _read_users(c: Checker) -> tuple[str, str | None, tuple[UserSpec, ...]]:
    base: Path_ = ("labvirt", "ssh")
    c.mapping(base, SSH_KEYS, strict=True)
    user = c.string((*base, "user"), "tripleo-admin", USER_RE, "user name") or "tripleo-admin"
    key = c.string((*base, "key"), None)
    users: list[UserSpec] = []
    for j, item in enumerate(c.list_((*base, "users"))):
        upath: Path_ = (*base, "users", j)
        if not isinstance(item, dict):
            c.error(upath, "users items are mappings with 'name' and optional 'keys'")
            continue
        c.mapping(upath, ("name", "keys"), strict=True)
        name = c.string((*upath, "name"), None, USER_RE, "user name")
        if name is None:
            if "name" not in item:
                c.error(upath, "user has no 'name'")
            continue
        keys = []
        for k in range(len(c.list_((*upath, "keys")))):
            text = c.string((*upath, "keys", k), None)
            if text is not None:
                if not re.match(r"^(ssh|ecdsa)-[A-Za-z0-9-]+ [A-Za-z0-9+/=]+( [^\n]*)?\Z", text):
                    c.error((*upath, "keys", k), "not an OpenSSH public key line",
                            "paste one line of a .pub file, such as 'ssh-ed25519 AAAA... me@host'")
                    continue
                keys.append(text)
        users.append(UserSpec(name, tuple(keys)))
    return user, key, tuple(users)


# Groups every inventory labvirt writes has (compared in lower case): no stack may be named so.
RESERVED_STACK_NAMES = frozenset({"all", "ungrouped", "allovercloud", "overcloud", "undercloud",
                                  "unassigned"})
# What `labvirt inventory` writes beside the stacks' directories: a stack of that name would
# be a directory where a file goes.
OUTPUT_DIR_NAMES = frozenset({"hosts"})  # edpm: refused by outputs.edpm at inventory time


def stack_name_problem(name: str) -> tuple[str, str] | None:
    """(message, hint) when `name` cannot be a stack name; one rule for the layout, for
    `labvirt assign` and for the lab's state file."""
    if not HOSTNAME_RE.match(name):
        return (f"{name!r} is not a valid stack name", _pattern_hint("stack name") or "")
    if name.lower() in RESERVED_STACK_NAMES:
        return (f"{name!r} cannot be a stack name: the inventories labvirt writes already "
                "have an Ansible group of that name", "pick another name, such as dcn2")
    if name.lower() in OUTPUT_DIR_NAMES:
        return (f"{name!r} cannot be a stack name: `labvirt inventory` writes {name} beside "
                "the stacks' directories", "pick another name, such as dcn2")
    return None


def _replaced_by_later_vms(c: Checker, node: str) -> tuple[str, str, str] | None:
    """(earlier file, later file:line, VM name) when `node` is a VM of an earlier layer's
    vms list that a later layer's vms list replaced: the usual surprise of layering."""
    owners = [f for f in c.raw.files if isinstance(f.data.get("vms"), list)]
    if len(owners) < 2:
        return None
    vm = re.sub(r"^oc\d+-", "", node)
    for f in owners[:-1]:
        if any(isinstance(e, dict) and e.get("name") == vm for e in f.data["vms"]):
            last = owners[-1]
            return f.name, f"{last.name}:{last.lines.get(('vms',), 1)}", vm
    return None


def _read_stacks(c: Checker, hostnames: dict[str, Path_]) -> tuple[StackSpec, ...]:
    base: Path_ = ("labvirt", "stacks")
    stacks: list[StackSpec] = []
    seen_stack: dict[str, int] = {}
    owner: dict[str, str] = {}
    for i, entry in enumerate(c.list_(base)):
        path: Path_ = (*base, i)
        if not isinstance(entry, dict):
            c.error(path, "each stack is a mapping with name, role and nodes")
            continue
        c.mapping(path, STACK_KEYS, strict=True)
        name = c.string((*path, "name"), None, HOSTNAME_RE, "stack name")
        if name is None:
            if "name" not in entry:
                c.error(path, "stack has no 'name'")
            continue
        if name in seen_stack:
            c.error((*path, "name"),
                    f"stack {name!r} is declared twice (also stacks[{seen_stack[name]}])")
            continue
        problem = stack_name_problem(name)
        if problem is not None:
            c.error((*path, "name"), *problem)
            continue
        seen_stack[name] = i
        role = c.string((*path, "role"), None, ROLE_RE, "role name")
        if role is None and "role" not in entry:
            c.error(path, f"stack {name!r} has no 'role'",
                    "add role: Compute (or another TripleO role)")
        members: list[StackMemberSpec] = []
        for j, item in enumerate(c.list_((*path, "nodes"))):
            npath: Path_ = (*path, "nodes", j)
            node_role = None
            if isinstance(item, dict):
                c.mapping(npath, ("name", "role"), strict=True)
                node = c.string((*npath, "name"), None)
                node_role = c.string((*npath, "role"), None, ROLE_RE, "role name")
            else:
                node = c.string(npath, None)
            if node is None:
                continue
            if node not in hostnames:
                replaced = _replaced_by_later_vms(c, node)
                if replaced:
                    earlier, later, vm = replaced
                    c.error(npath, f"stack {name!r} names node {node!r}, but the vms list of "
                            f"{later} replaced the one of {earlier}, which had {vm}",
                            f"a later vms: list replaces earlier ones entirely: add "
                            f"{{name: {vm}}} to the vms list of {later}, or remove {node!r} "
                            f"from stack {name!r}")
                    continue
                close = difflib.get_close_matches(node, list(hostnames), n=1)
                hint = f"did you mean {close[0]!r}?" if close else (
                    "nodes are named oc{N}-<vms name>, e.g. " + ", ".join(list(hostnames)[:3]))
                c.error(npath, f"stack {name!r} names unknown node {node!r}", hint)
                continue
            if node.startswith("undercloud"):
                c.error(npath, f"the undercloud cannot be a member of stack {name!r}",
                        "the undercloud deploys the stacks; remove it from nodes")
                continue
            if node in owner:
                c.error(npath, f"node {node!r} is in two stacks: {owner[node]!r} and {name!r}",
                        "a node belongs to at most one stack; remove it from one of them")
                continue
            owner[node] = name
            members.append(StackMemberSpec(node, node_role))
        stacks.append(StackSpec(name, role or "Compute", tuple(members)))
    # Stacks and roles are both Ansible groups in the inventories: one name cannot be both.
    roles = {r for s in stacks for r in (s.role, *(m.role for m in s.members)) if r}
    for s in stacks:
        if s.name in roles:
            c.error((*base, seen_stack[s.name], "name"), f"stack {s.name!r} has the name of a "
                    "role; in the inventories both are Ansible groups",
                    "name stacks in lower case, like central-compute")
    return tuple(stacks)


def read_layout(raw: RawLayout) -> LayoutSpec:
    """Validate the merged layout; raise LayoutErrors with every problem found."""
    c = Checker(raw)
    top = raw.data
    overclouds = c.integer(("overclouds",), 1, maximum=9) or 1
    vm_prefix = c.string(("vm_prefix",), "lab", PREFIX_RE, "name") or "lab"
    num_osds = c.integer(("num_osds",), 1, minimum=0, maximum=24)
    uefi = c.boolean(("uefi",), True)
    basedir = c.string(("basedir",), "/home/virtuser") or "/home/virtuser"
    if not basedir.startswith("/"):
        c.error(("basedir",), f"basedir must be an absolute path, got {basedir!r}")

    vms: list[VmSpec] = []
    if "vms" not in top:
        # no line to point at: the key is missing from every file
        files = ", ".join(raw.sources) or "<layout>"
        c.errors.append(LayoutError(
            "the layout has no 'vms' list" + (" in any file" if len(raw.sources) > 1 else ""),
            Location(files, None, "vms"),
            "list the undercloud and overcloud VMs under vms:, as overrides/glance-dcn.yml does"))
    vm_entries = c.list_(("vms",), "write one item per VM: '- name: ceph-0' on its own line")
    for i in range(len(vm_entries)):
        vm = _read_vm(c, i)
        if vm is not None:
            vms.append(vm)

    hostnames: dict[str, Path_] = {}
    for vm in vms:
        for n in [None] if vm.is_undercloud else range(overclouds):
            host = node_hostname(vm.name, n)
            if host in hostnames:
                c.error((*vm.path, "name"), f"duplicate node name {host!r} "
                        f"(also {format_path(hostnames[host])})", "every VM needs its own name")
            else:
                hostnames[host] = (*vm.path, "name")
    # only when every entry was read: a skipped bad entry may well be the overcloud VM
    if vms and len(vms) == len(vm_entries) and not any(not vm.is_undercloud for vm in vms):
        c.error(("vms",), "the layout has no overcloud VMs", "add entries like {name: ceph-0}")

    lv = c.mapping(("labvirt",), LABVIRT_KEYS, strict=True)
    name = c.string(("labvirt", "name"), None, PREFIX_RE, "name")
    uri = c.string(("labvirt", "uri"), "qemu:///system", URI_RE, "libvirt URI") or "qemu:///system"
    domain_type = c.string(("labvirt", "domain_type"), "auto", choices=DOMAIN_TYPES) or "auto"
    boot = c.string(("labvirt", "boot"), "image", choices=BOOT_MODES) or "image"
    image = c.string(("labvirt", "image"), None)
    access = c.string(("labvirt", "access"), "auto", choices=ACCESS_MODES) or "auto"
    port = c.integer(("labvirt", "forward_base_port"), None, minimum=1024, maximum=65000)
    pool_path = c.string(("labvirt", "pool_path"), None)
    console_dir = c.string(("labvirt", "console_dir"), None)
    for key, value in (("pool_path", pool_path), ("console_dir", console_dir)):
        if value is not None and not value.startswith("/"):
            c.error(("labvirt", key), f"must be an absolute path, got {value!r}")
    ssh_user, ssh_key, users = _read_users(c)
    ctlplane = _read_ctlplane(c)
    used_networks = list(dict.fromkeys(i.network for vm in vms for i in vm.interfaces))
    if ctlplane.network not in used_networks:
        used_networks.insert(0, ctlplane.network)
    networks = _read_networks(c, used_networks, ctlplane)

    nodes: dict[str, NodeOverride] = {}
    taken_ips: dict[ipaddress.IPv4Address, str] = {
        ctlplane.gateway: "the ctlplane gateway, labvirt.ctlplane.gateway",
        ctlplane.host_ip: "the hypervisor's address, labvirt.ctlplane.host_ip",
    }
    taken_ips.setdefault(ctlplane.undercloud_ip,
                         "the undercloud's address, labvirt.ctlplane.undercloud_ip")
    for host in c.mapping(("labvirt", "nodes"), None, strict=True):
        npath: Path_ = ("labvirt", "nodes", host)
        if host not in hostnames:
            close = difflib.get_close_matches(str(host), list(hostnames), n=1)
            c.error(npath, f"unknown node {host!r}",
                    f"did you mean {close[0]!r}?" if close
                    else "use a node name from `labvirt show`")
            continue
        c.mapping(npath, NODE_KEYS, strict=True)
        ip = c.address((*npath, "ctlplane_ip"), None)
        if ip is not None:
            if str(host).startswith("undercloud"):
                c.error((*npath, "ctlplane_ip"), "the undercloud's address is "
                        "labvirt.ctlplane.undercloud_ip", "set it there")
                ip = None
            elif ip not in ctlplane.cidr or ip in (ctlplane.cidr.network_address,
                                                   ctlplane.cidr.broadcast_address):
                c.error((*npath, "ctlplane_ip"), f"{ip} is outside the ctlplane network "
                        f"{ctlplane.cidr}", f"pick a free host address in {ctlplane.cidr}")
                ip = None
            elif ip in taken_ips:
                c.error((*npath, "ctlplane_ip"), f"{ip} is used twice (also {taken_ips[ip]})",
                        f"every node needs its own address: pick a free one in {ctlplane.cidr}, "
                        "or leave it out to get one from first_ip on")
                ip = None
            else:
                taken_ips[ip] = f"labvirt.nodes.{host}.ctlplane_ip"
        node_boot = c.string((*npath, "boot"), None, choices=BOOT_MODES)
        nodes[str(host)] = NodeOverride(ip, node_boot)

    rbase: Path_ = ("labvirt", "resize")
    c.mapping(rbase, RESIZE_KEYS, strict=True)
    resize = Resize(
        cpu=c.integer((*rbase, "cpu"), None, maximum=512),
        memory_bytes=c.size((*rbase, "memory"), 1000**2),
        disksize_bytes=c.size((*rbase, "disksize"), GIB),
        osd_bytes=c.size((*rbase, "osd_size"), GIB),
        swap_bytes=c.size((*rbase, "swap"), GIB),
    )
    honour_macs = c.boolean(("labvirt", "honour_macs"), False)
    if honour_macs:
        seen_mac: dict[str, str] = {}
        for vm in vms:
            for j, iface in enumerate(vm.interfaces):
                if iface.mac is None:
                    continue
                where = format_path((*vm.path, "interfaces", j, "mac"))
                if overclouds > 1 and not vm.is_undercloud:
                    c.error((*vm.path, "interfaces", j, "mac"), "fixed MACs cannot be honoured "
                            "with overclouds > 1 (every copy would share it)",
                            "set labvirt.honour_macs: false")
                elif iface.mac in seen_mac:
                    c.error((*vm.path, "interfaces", j, "mac"),
                            f"MAC {iface.mac} is used twice (also {seen_mac[iface.mac]})")
                else:
                    seen_mac[iface.mac] = where
    stacks = _read_stacks(c, hostnames)
    del lv
    if c.errors:
        raise LayoutErrors(c.errors)
    assert num_osds is not None
    spec = LabvirtSpec(
        name=name, uri=uri, domain_type=domain_type, boot=boot, image=image, access=access,
        forward_base_port=port, pool_path=pool_path, console_dir=console_dir,
        ssh_user=ssh_user, ssh_key=ssh_key, users=users, ctlplane=ctlplane,
        networks=networks, nodes=nodes, resize=resize, honour_macs=honour_macs, stacks=stacks,
    )
    return LayoutSpec(tuple(vms), overclouds, vm_prefix, num_osds, uefi, basedir, spec,
                      tuple(raw.sources), tuple(c.warnings))
