"""cloud-init NoCloud seed: the three seed files and the ``cidata`` ISO that carries them.

Pure Python (no libvirt). Everything is deterministic: the same :class:`SeedSpec` gives the
same file bytes and the same ISO bytes, whatever the clock or time zone.

The YAML is produced by a :class:`yaml.SafeDumper` in plain block style (no flow collections
except empty ones, keys in insertion order, lines never folded). Strings that contain a line
break are written as literal blocks (``|``) when YAML allows it, otherwise double-quoted on one
line, so that the awk parser in ``labvirt/image/tiny-init.sh`` only has to know a small subset:
plain, single-quoted and double-quoted one-line scalars and ``|``/``|-``/``|+`` literal blocks.
"""

from __future__ import annotations

import io
import threading
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from labvirt.errors import LabvirtError

__all__ = [
    "SEED_FILE_NAMES",
    "SEED_VOLUME_LABEL",
    "SUDO_NOPASSWD",
    "SeedError",
    "SeedInterface",
    "SeedSpec",
    "SeedUser",
    "build_seed_iso",
    "dump_yaml",
    "render_seed_files",
]

SEED_VOLUME_LABEL = "cidata"
SEED_FILE_NAMES = ("meta-data", "user-data", "network-config")
SUDO_NOPASSWD = "ALL=(ALL) NOPASSWD:ALL"
HOST_KEY_TYPES = ("ed25519", "rsa", "ecdsa")
DEFAULT_ROUTE4 = "0.0.0.0/0"
DEFAULT_ROUTE6 = "::/0"

# Every timestamp pycdlib writes into the ISO: 2024-01-01T00:00:00Z.
ISO_EPOCH = 1_704_067_200.0

# ISO 9660 level-1 names (8.3, upper case) for the seed files; Joliet and Rock Ridge
# carry the real names, which is what Linux and cloud-init read.
_ISO9660_NAMES = {
    "meta-data": "METADATA",
    "user-data": "USERDATA",
    "network-config": "NETWORKC",
    "vendor-data": "VENDORDA",
}


class SeedError(LabvirtError):
    """A seed could not be rendered or packed; the message says why and what to do."""


@dataclass(frozen=True)
class SeedUser:
    name: str
    ssh_authorized_keys: tuple[str, ...]
    sudo: bool = True  # passwordless sudo: "ALL=(ALL) NOPASSWD:ALL"


@dataclass(frozen=True)
class SeedInterface:
    mac: str  # lower-case aa:bb:cc:dd:ee:ff
    name: str  # logical name in network-config, e.g. "ctlplane0", "mgmt0"
    addresses: tuple[str, ...] = ()  # CIDR strings; empty + dhcp4=True for DHCP
    dhcp4: bool = False
    gateway4: str | None = None
    nameservers: tuple[str, ...] = ()
    gateway6: str | None = None


@dataclass(frozen=True)
class SeedSpec:
    instance_id: str
    hostname: str  # short name, e.g. "oc0-ceph-4"
    fqdn: str  # e.g. "oc0-ceph-4.localdomain"
    users: tuple[SeedUser, ...]
    # key type ("ed25519", "rsa", "ecdsa") -> (OpenSSH private key PEM text, public key line)
    host_keys: dict[str, tuple[str, str]]
    interfaces: tuple[SeedInterface, ...]


# --------------------------------------------------------------------------------------------
# YAML


_LINE_BREAKS = frozenset("\n\r\x85\u2028\u2029")
_NOT_IN_LITERAL = frozenset("\r\x85\u2028\u2029\ufeff")


class _SeedDumper(yaml.SafeDumper):
    """SafeDumper that never writes a multi-line plain or single-quoted scalar."""

    def ignore_aliases(self, data: Any) -> bool:  # never emit &anchors / *aliases
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style: str | None = None
    if any(ch in _LINE_BREAKS for ch in data):
        literal_ok = (
            "\n" in data
            and not any(ch in _NOT_IN_LITERAL for ch in data)
            and data[0] not in " \t\n"
        )
        # The emitter itself falls back to double quotes when a literal block is not
        # possible (trailing spaces, control characters, key position).
        style = "|" if literal_ok else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_SeedDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """Dump ``data`` in the block-style subset that tiny-init's awk parser reads."""
    return yaml.dump(
        data,
        Dumper=_SeedDumper,
        default_flow_style=False,
        sort_keys=False,
        width=1 << 20,
        allow_unicode=True,
        explicit_start=False,
        indent=2,
    )


def _meta_data(spec: SeedSpec) -> dict[str, Any]:
    return {"instance-id": spec.instance_id, "local-hostname": spec.hostname}


def _user_data(spec: SeedSpec) -> dict[str, Any]:
    users: list[dict[str, Any]] = []
    for user in spec.users:
        entry: dict[str, Any] = {"name": user.name}
        if user.sudo:  # no key at all otherwise (cloud-init deprecates `sudo: false`)
            entry["sudo"] = SUDO_NOPASSWD
        entry["shell"] = "/bin/bash"
        entry["lock_passwd"] = True
        entry["ssh_authorized_keys"] = list(user.ssh_authorized_keys)
        users.append(entry)

    data: dict[str, Any] = {
        "hostname": spec.hostname,
        "fqdn": spec.fqdn,
        "manage_etc_hosts": True,
        "users": users,
        "ssh_pwauth": False,
        "ssh_deletekeys": True,
        # labvirt grows every root disk to the node's disksize; the guest grows its root
        # partition and filesystem into it (cloud images do by default; said here so that an
        # image whose cloud.cfg differs does it too).
        "growpart": {"mode": "auto", "devices": ["/"]},
        "resize_rootfs": True,
    }
    if spec.host_keys:
        unknown = sorted(set(spec.host_keys) - set(HOST_KEY_TYPES))
        if unknown:
            raise SeedError(
                f"unsupported host key type(s) {unknown} for {spec.hostname!r}; "
                f"use one of {list(HOST_KEY_TYPES)}"
            )
        ssh_keys: dict[str, str] = {}
        # Fixed order (not the dict's) so that equal specs give equal bytes.
        for key_type in HOST_KEY_TYPES:
            if key_type not in spec.host_keys:
                continue
            private, public = spec.host_keys[key_type]
            if not private.endswith("\n"):
                private += "\n"
            ssh_keys[f"{key_type}_private"] = private
            ssh_keys[f"{key_type}_public"] = public.strip()
        data["ssh_keys"] = ssh_keys
    return data


def _network_config(spec: SeedSpec) -> dict[str, Any]:
    ethernets: dict[str, Any] = {}
    for iface in spec.interfaces:
        if iface.name in ethernets:
            raise SeedError(
                f"interface name {iface.name!r} is used twice in the seed of "
                f"{spec.hostname!r}; give each interface its own name"
            )
        entry: dict[str, Any] = {
            "match": {"macaddress": iface.mac.lower()},
            "set-name": iface.name,
        }
        if iface.addresses:
            entry["addresses"] = list(iface.addresses)
        entry["dhcp4"] = bool(iface.dhcp4)
        # Default routes as 0.0.0.0/0 and ::/0, never `to: default`: cloud-init accepts the
        # word `default` only since 25.3, and 22.4 (Debian 12) to 24.x (CentOS Stream, RHEL)
        # reject the whole network-config for it ("Address default is not a valid ip network").
        # (22.4 also misreads ::/0 as ::/64; no lab is IPv6 yet: tests/consumer pins it.)
        # IPv4 as `gateway4`, not a 0.0.0.0/0 route: cloud-init's ENI renderer (Debian's
        # ifupdown) writes a route as `post-up route add default gw ... || true`, and
        # route(8) is in net-tools, which Debian cloud images lack: the node silently had
        # no default route (seen on a real Debian 12 guest). `gateway4` renders as
        # ifupdown's own `gateway` line, GATEWAY= in sysconfig and Gateway= in networkd.
        if iface.gateway4:
            entry["gateway4"] = iface.gateway4
        routes: list[dict[str, str]] = []
        if iface.gateway6:
            routes.append({"to": DEFAULT_ROUTE6, "via": iface.gateway6})
        if routes:
            entry["routes"] = routes
        if iface.nameservers:
            entry["nameservers"] = {"addresses": list(iface.nameservers)}
        ethernets[iface.name] = entry
    return {"version": 2, "ethernets": ethernets}


def render_seed_files(spec: SeedSpec) -> dict[str, bytes]:
    """Render ``meta-data``, ``user-data`` and ``network-config`` for ``spec``."""
    return {
        "meta-data": dump_yaml(_meta_data(spec)).encode("utf-8"),
        "user-data": ("#cloud-config\n" + dump_yaml(_user_data(spec))).encode("utf-8"),
        "network-config": dump_yaml(_network_config(spec)).encode("utf-8"),
    }


# --------------------------------------------------------------------------------------------
# ISO


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib: a fixed clock in UTC."""

    def __init__(self, epoch: float) -> None:
        self._epoch = epoch

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> _time.struct_time:
        return _time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


_PYCDLIB_CLOCK_LOCK = threading.Lock()


@contextmanager
def _fixed_pycdlib_clock(epoch: float) -> Iterator[None]:
    """Make every timestamp pycdlib writes equal to ``epoch`` (UTC, offset 0)."""
    from pycdlib import dates, headervd, rockridge, utils
    from pycdlib import pycdlib as pycdlib_core

    modules = [m for m in (pycdlib_core, headervd, dates, utils, rockridge) if hasattr(m, "time")]
    with _PYCDLIB_CLOCK_LOCK:
        saved = [(m, m.time) for m in modules]
        clock = _FixedClock(epoch)
        try:
            for module in modules:
                module.time = clock  # type: ignore[attr-defined]
            yield
        finally:
            for module, original in saved:
                module.time = original  # type: ignore[attr-defined]


def _iso9660_name(name: str, used: set[str]) -> str:
    base = _ISO9660_NAMES.get(name)
    if base is None:
        cleaned = "".join(ch if ch.isalnum() else "_" for ch in name.upper())
        base = (cleaned or "FILE")[:8]
    candidate, n = base, 0
    while candidate in used:
        n += 1
        candidate = f"{base[: 8 - len(str(n))]}{n}"
    used.add(candidate)
    return candidate


def build_seed_iso(files: dict[str, bytes]) -> bytes:
    """Pack seed files into a NoCloud ISO (ISO 9660 + Joliet + Rock Ridge, label ``cidata``).

    Built in memory with pycdlib; all timestamps are fixed so equal inputs give equal bytes.
    """
    try:
        import pycdlib
    except ImportError as exc:  # pragma: no cover - pycdlib is a declared dependency
        raise SeedError(
            f"pycdlib is not importable ({exc}); install it with `pip install pycdlib`"
        ) from exc

    for name in files:
        if not name or "/" in name or len(name) > 64:
            raise SeedError(f"seed file name {name!r} is not a plain file name of 1-64 characters")

    with _fixed_pycdlib_clock(ISO_EPOCH):
        iso = pycdlib.PyCdlib()
        try:
            iso.new(
                interchange_level=1,
                joliet=3,
                rock_ridge="1.09",
                vol_ident=SEED_VOLUME_LABEL,
                sys_ident="LINUX",
                app_ident_str="LABVIRT",
            )
            used: set[str] = set()
            for name in sorted(files):
                data = files[name]
                iso.add_fp(
                    io.BytesIO(data),
                    len(data),
                    f"/{_iso9660_name(name, used)}.;1",
                    rr_name=name,
                    joliet_path=f"/{name}",
                    file_mode=0o100444,
                )
            out = io.BytesIO()
            iso.write_fp(out)
        except pycdlib.pycdlibexception.PyCdlibException as exc:
            raise SeedError(f"building the cidata ISO with pycdlib failed: {exc}") from exc
        finally:
            iso.close()
    return out.getvalue()
