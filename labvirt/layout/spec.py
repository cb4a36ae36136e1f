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
from labvirt.layout.loader import Path_, RawLayout, format_path, yaml_kind

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
# labels of at most 63 characters; the whole name is bounded with the hostnames in it
DNS_DOMAIN_RE = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# ASCII digits only (\d also matches other scripts' digits), and few enough to stay exact
SIZE_RE = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,9})?)\s*([KMGT]i?B?|[kmgt]|B)?\s*\Z", re.ASCII)
INT_RE = re.compile(r"^-?[0-9]+\Z")
# a whole number written as text: more digits than this is no count or size labvirt reads
MAX_INT_DIGITS = 18

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
                maximum: int | None = None, unit: str = "") -> int | None:
        if not self.has(path) or self.get(path) is None:
            return default
        value = self.get(path)
        hint = _example_hint(path)
        if isinstance(value, str) and INT_RE.match(value.strip()):
            # isdigit() would pass '²' and int() then fail; and int() of 5000 digits raises
            if len(value.strip().lstrip("-")) > MAX_INT_DIGITS:
                self.error(path, f"must be a whole number of at most {MAX_INT_DIGITS} digits, "
                           f"got one of {len(value.strip().lstrip('-'))}", hint)
                return default
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be a whole number, got {describe(value)}", hint)
            return default
        if value < minimum:
            what = "positive" if minimum == 1 else f"at least {minimum}{unit}"
            self.error(path, f"must be {what}, got {_short(value)}", hint)
            return default
        if maximum is not None and value > maximum:
            self.error(path, f"must be at most {maximum}{unit}, got {_short(value)}", hint)
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
               what: str = "", choices: tuple[str, ...] | None = None,
               empty_hint: str | None = None) -> str | None:
        """A string as the user wrote it. With `empty_hint` (names), a key that is present
        but null or empty is an error rather than the default: `name: ~` must not drop a
        VM. With `pattern` (names, MACs, URIs), a scalar YAML 1.1 did not read as text
        (`0x1F`, `010`, `1:30`, `yes`) is an error asking for quotes: converting it back
        would give another name (`31`, `8`, `90`)."""
        if not self.has(path):
            return default
        value = self.get(path)
        if value is None or (empty_hint is not None and value == ""):
            if empty_hint is None:
                return default
            self.error(path, "is empty" + (f"; a {what} is needed here" if what else ""),
                       empty_hint)
            return None
        if not isinstance(value, (str, dict, list)):
            source = self.raw.scalar_source(path)
            text = source[0] if source else None
            kind = yaml_kind(source[1]) if source else describe(value)
            if pattern is not None:
                written = text if text is not None else str(value)
                self.error(path, f"{written} is read by YAML as {kind}"
                           + ("" if text is None or str(value) == text
                              else f" ({_short(value)})") + ", not as text",
                           f"quote it: {path[-1]}: '{written}'" if isinstance(path[-1], str)
                           else f"quote it: '{written}'")
                return None if empty_hint is not None else default
            if text is not None:
                value = text  # what the user wrote (010, not 8)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
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

    def size(self, path: Path_, default_unit: int, minimum: int = 1,
             maximum: int | None = None) -> int | None:
        if not self.has(path) or self.get(path) is None:
            return None
        try:
            value = parse_size(self.get(path), default_unit)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if value < minimum and value > 0:
            self.error(path, f"must be at least {show_size(minimum)}, got "
                       f"{self.get(path)!r} ({show_size(value)})",
                       "a guest needs that much to be of any use; write it like 10G or 512MiB")
            return None
        if maximum is not None and value > maximum:
            self.error(path, f"must be at most {show_size(maximum)}, got "
                       f"{_short(self.get(path))!r}", "write it like 10G or 512MiB")
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
        problem = network_problem(net)
        if problem is not None:
            self.error(path, problem, "use a private range such as 192.168.24.0/24 "
                       "(from /8 to /29)")
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


def _short(value: Any) -> str:
    """A value for a message: a 100-digit number is shown by its length."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def show_size(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} byte" + ("" if n == 1 else "s")


def network_problem(net: ipaddress.IPv4Network) -> str | None:
    """Why `net` cannot be a lab network, decided arithmetically (a /0 is never listed)."""
    if net.prefixlen < 8:
        return (f"{net} has {net.num_addresses} addresses, more than any lab network "
                "needs (at most a /8)")
    special = [
        (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
        (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
        (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
        (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
        (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
    ]
    for block, what in special:
        if net.overlaps(block):
            return f"{net} is {what}, not a range a lab network can use"
    return None


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
        "node name": "nodes are named like oc0-ceph-0 (see `labvirt show`)",
        "role name": "TripleO role names look like Controller, CephAll, DistributedComputeHCI",
        "network name": "use letters, digits and '-' (at most 63, not starting or ending "
                        "with '-')",
        "MAC address": "write it like 52:54:00:12:34:56",
        "user name": "use lower-case letters, digits, '-' and '_'",
        "bridge name": "at most 15 letters, digits, '-', '_' or '.'",
        "libvirt URI": "for example qemu:///system or qemu+ssh://host/system",
        "DNS domain": "lower-case labels of letters, digits and '-' (at most 63 each), "
                      "separated by dots, like lab.example",
    }.get(what)


# QEMU refuses throttling values above 10^15 (THROTTLE_VALUE_MAX)
IOTUNE_MAX = 10**15
# libvirt refuses a total_* limit together with the read_*/write_* ones of the same kind
_IOTUNE_EXCLUSIVE = [(f"total_{k}", f"read_{k}", f"write_{k}")
                     for k in ("bytes_sec", "iops_sec", "bytes_sec_max", "iops_sec_max")]
INTERFACE_KEYS = ("network", "mac")
VM_MIN_MEMORY_MB = 128
SWAP_MIN_BYTES = 64 * MIB
NAME_EMPTY_HINT = "every VM needs a name, like ceph-0"


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
        c.error(path, "vms entry has no 'name'", NAME_EMPTY_HINT)
        return None
    name = c.string((*path, "name"), None, HOSTNAME_RE, "hostname", empty_hint=NAME_EMPTY_HINT)
    if name is None:
        return None
    cpu = c.integer((*path, "cpu"), 1, maximum=512) or 1
    memory = c.integer((*path, "memory"), 2048, minimum=VM_MIN_MEMORY_MB,
                       maximum=4 * 1024 * 1024, unit=" (MB)") or 2048
    disksize = c.integer((*path, "disksize"), 100, maximum=64 * 1024, unit=" (GiB)") or 100
    swap = c.size((*path, "swap"), GIB, minimum=SWAP_MIN_BYTES, maximum=64 * 1024**4)
    iotune: list[tuple[str, int]] = []
    tune_path: dict[str, Path_] = {}
    for j, tune in enumerate(c.list_((*path, "iotune"))):
        tpath: Path_ = (*path, "iotune", j)
        if not isinstance(tune, dict) or "tune" not in tune or "value" not in tune:
            c.error(tpath, "iotune items are mappings with 'tune' and 'value'",
                    "for example {tune: total_iops_sec, value: 500}")
            continue
        c.mapping(tpath, ("tune", "value"), strict=True)
        key = c.string((*tpath, "tune"), None, choices=IOTUNE_KEYS)
        if tune["tune"] is None:
            c.error((*tpath, "tune"), "is empty", f"one of {', '.join(IOTUNE_KEYS)}")
        if tune["value"] is None:
            c.error((*tpath, "value"), "is empty", "a whole number; 0 means no limit")
        val = c.integer((*tpath, "value"), None, minimum=0, maximum=IOTUNE_MAX)
        if key is None or val is None:
            continue
        if key in tune_path:
            c.error((*tpath, "tune"), f"{key} is set twice (also "
                    f"{format_path(tune_path[key])})", "keep one of them")
            continue
        tune_path[key] = tpath
        iotune.append((key, val))
    for total, read, write in _IOTUNE_EXCLUSIVE:
        both = [k for k in (read, write) if k in tune_path]
        if total in tune_path and both:
            c.error((*tune_path[both[0]], "tune"), f"{both[0]} cannot be combined with "
                    f"{total} (libvirt refuses it)", f"set either {total} or {read}/{write}")
    interfaces: list[InterfaceSpec] = []
    nics_hint = "for example interfaces: [{network: ctlplane}, {network: ctlplane}]"
    for j, item in enumerate(c.list_((*path, "interfaces"), nics_hint)):
        ipath: Path_ = (*path, "interfaces", j)
        if isinstance(item, str) or item is None:
            # tripleo-lab's rule: an item without a network is on ctlplane
            if isinstance(item, str) and item != "ctlplane":
                c.warn(ipath, f"the interface {item!r} is on ctlplane, as tripleo-lab puts "
                       f"every item without 'network:'; write {{network: {item}}} for the "
                       f"network {item!r}")
            interfaces.append(InterfaceSpec("ctlplane", None))
            continue
        if not isinstance(item, dict):
            c.error(ipath, f"an interface is a mapping or a string, got {describe(item)}")
            continue
        # strict: a misspelt `netwrok:` would silently put the NIC on ctlplane
        c.mapping(ipath, INTERFACE_KEYS, strict=True)
        network = c.string((*ipath, "network"), "ctlplane", HOSTNAME_RE, "network name",
                           empty_hint="name the network, or leave network: out for ctlplane"
                           ) or "ctlplane"
        mac = c.string((*ipath, "mac"), None, MAC_RE, "MAC address")
        interfaces.append(InterfaceSpec(network, mac.lower() if mac else None))
    autostart = c.boolean((*path, "autostart"), False) if c.has((*path, "autostart")) else None
    return VmSpec(name, cpu, memory, disksize, swap, tuple(iotune), tuple(interfaces),
                  autostart, path)


def _read_ctlplane(c: Checker) -> CtlplaneSpec:
    base: Path_ = ("labvirt", "ctlplane")
    c.mapping(base, CTLPLANE_KEYS, strict=True)
    cidr = c.network((*base, "cidr"), "192.168.24.0/24") or ipaddress.IPv4Network("192.168.24.0/24")
    # arithmetic, never cidr.hosts(): listing a /8 takes seconds, a /0 all memory
    first_host, last_host = host_range(cidr)
    gateway = c.address((*base, "gateway"), str(first_host)) or first_host
    undercloud = c.address((*base, "undercloud_ip"), str(gateway)) or gateway
    first = c.address((*base, "first_ip"), str(default_first_ip(cidr)))
    host_ip = c.address((*base, "host_ip"), str(last_host)) or last_host
    dns_raw = c.get((*base, "dns"))
    dns: list[ipaddress.IPv4Address] = []
    if dns_raw is None:
        dns = [undercloud]
    elif isinstance(dns_raw, list):
        for j in range(len(dns_raw)):
            if dns_raw[j] is None:
                c.error((*base, "dns", j), "is empty", "write an address, or remove the item")
                continue
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
    network = c.string((*base, "network"), "ctlplane", HOSTNAME_RE, "network name",
                       empty_hint="remove it for the default, ctlplane") or "ctlplane"
    domain = c.string((*base, "dns_domain"), "localdomain", DNS_DOMAIN_RE,
                      "DNS domain") or "localdomain"
    return CtlplaneSpec(network, cidr, gateway, undercloud, first or first_host, tuple(dns),
                        host_ip, domain)


def host_range(net: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """First and last host address of a network of 8 or more addresses."""
    return net.network_address + 1, net.broadcast_address - 1


def default_first_ip(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """tripleo-lab's .30 (the 31st host, after the undercloud's DHCP range) in a /26 or
    larger; in a smaller network, which has no room for that gap, the host after .1."""
    return net.network_address + (30 if net.num_addresses >= 64 else 2)


def _ctlplane_room(c: Checker, cp: CtlplaneSpec, hostnames: dict[str, Path_],
                   nodes: dict[str, NodeOverride],
                   taken: dict[ipaddress.IPv4Address, str]) -> None:
    """Enough addresses from first_ip on for every node without a fixed one, counted
    arithmetically (labvirt.model hands them out in order)."""
    need = sum(1 for h in hostnames if not h.startswith("undercloud")
               and not (h in nodes and nodes[h].ctlplane_ip))
    first = max(cp.first_ip, cp.cidr.network_address + 1)
    last = cp.cidr.broadcast_address - 1
    span = max(0, int(last) - int(first) + 1)
    free = span - sum(1 for a in taken if first <= a <= last)
    if need <= free:
        return
    base: Path_ = ("labvirt", "ctlplane")
    given = c.has((*base, "first_ip"))
    where = (*base, "first_ip") if given else (*base, "cidr") if c.has((*base, "cidr")) else base
    c.error(where, f"the ctlplane network {cp.cidr} has {free} free address(es) from "
            f"{'first_ip ' if given else ''}{first} to {last}, and {need} node(s) need one",
            "use a larger cidr" + (" or a lower first_ip" if given else "")
            + ", or fewer nodes")


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
    _networks_apart(c, out, ctlplane)
    for name in declared:
        if name not in used and name != ctlplane.network:
            c.warn((*base, name), f"network {name!r} is declared but no VM interface uses it")
    return out


def _networks_apart(c: Checker, networks: dict[str, NetworkSpec],
                    ctlplane: CtlplaneSpec) -> None:
    """Two networks on one range or one bridge would be one network to the host, and two
    names differing only in case are two libvirt networks one misreads as one."""
    base: Path_ = ("labvirt", "networks")
    by_lower: dict[str, str] = {}
    cidrs: list[tuple[str, ipaddress.IPv4Network]] = [
        ("the ctlplane (labvirt.ctlplane.cidr)", ctlplane.cidr)]
    bridges: dict[str, str] = {}
    for name, net in networks.items():
        other = by_lower.setdefault(name.lower(), name)
        if other != name:
            c.error((*base, name), f"networks {other!r} and {name!r} differ only in case",
                    "use one spelling for one network, everywhere")
        if net.cidr is not None:
            clash = next((who for who, cidr in cidrs if cidr.overlaps(net.cidr)), None)
            if clash is not None:
                c.error((*base, name, "cidr"), f"{net.cidr} overlaps the range of {clash}",
                        "every network needs a range of its own")
            cidrs.append((f"network {name!r} ({net.cidr})", net.cidr))
        if net.bridge is not None:
            if net.bridge in bridges:
                c.error((*base, name, "bridge"), f"bridge {net.bridge!r} is already the "
                        f"bridge of network {bridges[net.bridge]!r}", "every network needs a "
                        "bridge of its own; leave bridge: out for a generated name")
            bridges.setdefault(net.bridge, name)


def _read_users(c: Checker) -> tuple[str, str | None, tuple[UserSpec, ...]]:
    base: Path_ = ("labvirt", "ssh")
    c.mapping(base, SSH_KEYS, strict=True)
    user = c.string((*base, "user"), "tripleo-admin", USER_RE, "user name",
                    empty_hint="remove it for the default, tripleo-admin") or "tripleo-admin"
    key = c.string((*base, "key"), None)
    if key is not None:
        _check_key_file(c, (*base, "key"), key)
    users: list[UserSpec] = []
    seen: dict[str, int] = {}
    for j, item in enumerate(c.list_((*base, "users"))):
        upath: Path_ = (*base, "users", j)
        if not isinstance(item, dict):
            c.error(upath, "users items are mappings with 'name' and optional 'keys'")
            continue
        c.mapping(upath, ("name", "keys"), strict=True)
        name = c.string((*upath, "name"), None, USER_RE, "user name",
                        empty_hint="every user needs a login name, like alice")
        if name is None:
            if "name" not in item:
                c.error(upath, "user has no 'name'")
            continue
        if name in seen:
            c.error((*upath, "name"), f"user {name!r} is listed twice (also "
                    f"labvirt.ssh.users[{seen[name]}])", "list each user once, with all keys")
            continue
        seen[name] = j
        keys = []
        for k in range(len(c.list_((*upath, "keys")))):
            text = c.string((*upath, "keys", k), None, empty_hint="paste a public key line, "
                            "or remove the item")
            if text is not None:
                if not re.match(r"^(ssh|ecdsa)-[A-Za-z0-9-]+ [A-Za-z0-9+/=]+( [^\n]*)?\Z", text):
                    c.error((*upath, "keys", k), "not an OpenSSH public key line",
                            "paste one line of a .pub file, such as 'ssh-ed25519 AAAA... me@host'")
                    continue
                keys.append(text)
        users.append(UserSpec(name, tuple(keys)))
    return user, key, tuple(users)


def _check_key_file(c: Checker, path: Path_, key: str) -> None:
    """labvirt creates the lab's key only when labvirt.ssh.key is not set; a key it is told
    to use must exist, or every inventory and ssh_config would point at nothing."""
    import os

    try:
        found = os.path.isfile(os.path.expanduser(key))
    except (OSError, ValueError):
        found = False
    if not found:
        c.error(path, f"the ssh key {key} does not exist (or is not a file)",
                f"create it with ssh-keygen -t ed25519 -N '' -f {key}, or remove "
                "labvirt.ssh.key to let labvirt create the lab's own key")


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


# Groups the inventories have besides the roles (compared in lower case): a role of that
# name would merge its hosts into them (a role `Undercloud` replaces the Undercloud group).
RESERVED_ROLE_NAMES = frozenset({*RESERVED_STACK_NAMES, "excluded_overcloud"})


def role_name_problem(role: str) -> tuple[str, str] | None:
    """(message, hint) when `role` cannot be a TripleO role here; one rule for the layout,
    for `labvirt assign --role` and for the lab's state file."""
    if not ROLE_RE.match(role):
        return (f"{role!r} is not a valid role name", _pattern_hint("role name") or "")
    if role.lower() in RESERVED_ROLE_NAMES:
        return (f"{role!r} cannot be a role name: the inventories labvirt writes already "
                "have an Ansible group of that name", "use a TripleO role such as Compute, "
                "Controller or CephAll")
    return None


def _role(c: Checker, path: Path_) -> str | None:
    role = c.string(path, None, ROLE_RE, "role name",
                    empty_hint="write a TripleO role such as Compute, or remove role:")
    if role is not None and (problem := role_name_problem(role)) is not None:
        c.error(path, *problem)
        return None
    return role


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
    seen_lower: dict[str, str] = {}
    owner: dict[str, str] = {}
    for i, entry in enumerate(c.list_(base)):
        path: Path_ = (*base, i)
        if not isinstance(entry, dict):
            c.error(path, "each stack is a mapping with name, role and nodes")
            continue
        c.mapping(path, STACK_KEYS, strict=True)
        name = c.string((*path, "name"), None, HOSTNAME_RE, "stack name",
                        empty_hint="every stack needs a name, like dcn0")
        if name is None:
            if "name" not in entry:
                c.error(path, "stack has no 'name'")
            continue
        if name in seen_stack:
            c.error((*path, "name"),
                    f"stack {name!r} is declared twice (also stacks[{seen_stack[name]}])")
            continue
        if name.lower() in seen_lower:
            other = seen_lower[name.lower()]
            c.error((*path, "name"), f"stacks {other!r} and {name!r} differ only in case "
                    f"(also stacks[{seen_stack[other]}])", "a stack becomes a directory and "
                    "an Ansible group: give each stack a name of its own")
            continue
        problem = stack_name_problem(name)
        if problem is not None:
            c.error((*path, "name"), *problem)
            continue
        seen_stack[name] = i
        seen_lower[name.lower()] = name
        role = _role(c, (*path, "role"))
        if role is None and "role" not in entry:
            c.error(path, f"stack {name!r} has no 'role'",
                    "add role: Compute (or another TripleO role)")
        members: list[StackMemberSpec] = []
        for j, item in enumerate(c.list_((*path, "nodes"))):
            npath: Path_ = (*path, "nodes", j)
            node_role = None
            if isinstance(item, dict):
                c.mapping(npath, ("name", "role"), strict=True)
                if "name" not in item:
                    c.error(npath, "node entry has no 'name'", "write {name: oc0-ceph-0, "
                            "role: CephAll}, or just the node's name")
                    continue
                node = c.string((*npath, "name"), None, HOSTNAME_RE, "node name",
                                empty_hint="write the node's name, like oc0-ceph-0")
                node_role = _role(c, (*npath, "role"))
            else:
                node = c.string(npath, None, HOSTNAME_RE, "node name",
                                empty_hint="write the node's name, like oc0-ceph-0, or "
                                "remove the item")
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
            if node in owner and owner[node] == name:
                c.error(npath, f"node {node!r} is listed twice in stack {name!r}",
                        "list each node once")
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


# A bound on the work one layout can ask for; labs have tens of nodes.
MAX_NODES = 1000
# Nodes a lab reached by port forwards may have: one block of ports (labvirt.model).
FORWARD_MAX_NODES = 100


def read_layout(raw: RawLayout) -> LayoutSpec:
    """Validate the merged layout; raise LayoutErrors with every problem found."""
    c = Checker(raw)
    top = raw.data
    overclouds = c.integer(("overclouds",), 1, maximum=9) or 1
    vm_prefix = c.string(("vm_prefix",), "lab", PREFIX_RE, "name",
                         empty_hint="remove it for the default, lab") or "lab"
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
    if "vms" in top and not vm_entries and isinstance(top["vms"], (list, type(None))):
        c.error(("vms",), "the vms list is empty: the lab would have no nodes",
                "list the undercloud and overcloud VMs under vms:, as "
                "overrides/glance-dcn.yml does")
    for i in range(len(vm_entries)):
        vm = _read_vm(c, i)
        if vm is not None:
            vms.append(vm)

    hostnames: dict[str, Path_] = {}
    lower: dict[str, str] = {}
    undercloud: VmSpec | None = None
    for vm in vms:
        if vm.is_undercloud:
            if undercloud is not None:
                c.error((*vm.path, "name"), f"{vm.name!r} would be a second undercloud (also "
                        f"{format_path(undercloud.path)}, {undercloud.name!r}): every VM whose "
                        "name starts with 'undercloud' is the undercloud, and a lab has one",
                        "give the other VM a name that does not start with 'undercloud'")
                continue
            undercloud = vm
        elif len(node_hostname(vm.name, overclouds - 1)) > 63:
            longest = node_hostname(vm.name, overclouds - 1)
            c.error((*vm.path, "name"), f"{vm.name!r} becomes the hostname {longest!r} of "
                    f"{len(longest)} characters, more than the 63 a hostname may have",
                    f"shorten it to at most {63 - len(longest) + len(vm.name)} characters")
            continue
        for n in [None] if vm.is_undercloud else range(overclouds):
            host = node_hostname(vm.name, n)
            if host in hostnames:
                c.error((*vm.path, "name"), f"duplicate node name {host!r} "
                        f"(also {format_path(hostnames[host])})", "every VM needs its own name")
            elif host.lower() in lower:
                other = lower[host.lower()]
                c.error((*vm.path, "name"), f"node names {other!r} and {host!r} differ only "
                        f"in case (also {format_path(hostnames[other])})",
                        "hostnames are not case-sensitive: every VM needs its own name")
            else:
                hostnames[host] = (*vm.path, "name")
                lower[host.lower()] = host
    if len(hostnames) > MAX_NODES:
        c.error(("vms",), f"the layout makes {len(hostnames)} nodes, more than labvirt "
                f"builds ({MAX_NODES})", "use fewer vms entries or fewer overclouds")
    # only when every entry was read: a skipped bad entry may well be the overcloud VM
    if vms and len(vms) == len(vm_entries) and not any(not vm.is_undercloud for vm in vms):
        c.error(("vms",), "the layout has no overcloud VMs", "add entries like {name: ceph-0}")

    lv = c.mapping(("labvirt",), LABVIRT_KEYS, strict=True)
    name = c.string(("labvirt", "name"), None, PREFIX_RE, "name",
                    empty_hint="remove it to name the lab after vm_prefix; the name is the "
                    "lab's identity (state, networks, MACs)")
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
    _ctlplane_room(c, ctlplane, hostnames, nodes, taken_ips)
    longest = max(hostnames, key=len, default="")
    fqdn = f"{longest}.{ctlplane.network}.{ctlplane.dns_domain}"
    if len(fqdn) > 253:
        c.error(("labvirt", "ctlplane", "dns_domain"), f"the node name {fqdn} has "
                f"{len(fqdn)} characters, more than the 253 a DNS name may have",
                "use a shorter dns_domain")
    resolved_access = access if access != "auto" else (
        "bridge" if uri.startswith("qemu:///system") else "forward")
    if resolved_access == "forward" and len(hostnames) > FORWARD_MAX_NODES:
        c.error(("labvirt", "access") if c.has(("labvirt", "access")) else ("vms",),
                f"the layout makes {len(hostnames)} nodes, and a lab reached by port "
                f"forwards (access: forward) has at most {FORWARD_MAX_NODES}",
                "use fewer vms entries or overclouds, or access: bridge with qemu:///system")

    rbase: Path_ = ("labvirt", "resize")
    c.mapping(rbase, RESIZE_KEYS, strict=True)
    resize = Resize(
        cpu=c.integer((*rbase, "cpu"), None, maximum=512),
        memory_bytes=c.size((*rbase, "memory"), 1000**2, minimum=128 * MIB,
                            maximum=4 * 1024**4),
        disksize_bytes=c.size((*rbase, "disksize"), GIB, minimum=GIB, maximum=64 * 1024**4),
        osd_bytes=c.size((*rbase, "osd_size"), GIB, minimum=GIB, maximum=64 * 1024**4),
        swap_bytes=c.size((*rbase, "swap"), GIB, minimum=SWAP_MIN_BYTES,
                          maximum=64 * 1024**4),
    )
    honour_macs = c.boolean(("labvirt", "honour_macs"), False)
    if honour_macs:
        seen_mac: dict[str, str] = {}
        for vm in vms:
            for j, iface in enumerate(vm.interfaces):
                if iface.mac is None:
                    continue
                where = format_path((*vm.path, "interfaces", j, "mac"))
                first_octet = int(iface.mac[:2], 16)
                if iface.mac == "00:00:00:00:00:00":
                    c.error((*vm.path, "interfaces", j, "mac"), "00:00:00:00:00:00 is not a "
                            "usable MAC", "pick one like 52:54:00:12:34:56, or remove mac:")
                elif first_octet & 1:
                    c.error((*vm.path, "interfaces", j, "mac"), f"{iface.mac} is a multicast "
                            "MAC (the lowest bit of its first byte is set); a NIC needs a "
                            "unicast one", "pick one like 52:54:00:12:34:56 (first byte even)")
                elif overclouds > 1 and not vm.is_undercloud:
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
