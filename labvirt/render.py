"""libvirt XML from the lab model, through the Jinja2 templates in templates/.

Views are small frozen dataclasses holding exactly what a template needs, so that the
templates stay free of logic and every value passes Jinja2's autoescaping. Identities are
derived, never random: UUIDs are uuid5 of the lab and object names, so the same lab always
renders the same XML (and redefining keeps the UUID, which libvirt requires).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import jinja2

from labvirt.model import Lab, Network, Node
from labvirt.resources import templates_dir

NS = "http://labvirt.invalid/xmlns/labvirt/1"
_UUID_NS = uuid.UUID("5d1f2c4e-7a53-4c38-9a0e-6c1b1f0d2a11")

DEFAULT_LOADER = "/usr/share/OVMF/OVMF_CODE_4M.fd"
DEFAULT_NVRAM_TEMPLATE = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# The user-mode NIC added on QEMU's command line gets a fixed PCI slot high enough that
# libvirt's own automatic addresses (assigned from the bottom) never reach it.
MGMT_PCI_ADDR = "0x1e"


def derived_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_UUID_NS, "/".join(parts)))


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,  # every template renders XML
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


def _render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


@dataclass(frozen=True)
class BootFiles:
    """Direct kernel boot (the tiny image): paths as the hypervisor sees them."""

    kernel: str
    initrd: str
    cmdline: str


@dataclass(frozen=True)
class DiskView:
    volume: str
    target: str
    format: str
    iotune: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class NicView:
    network: str  # libvirt network name
    mac: str


@dataclass(frozen=True)
class DomainView:
    ns: str
    lab: str
    hostname: str
    name: str
    uuid: str
    stack: str
    role: str
    hash: str
    domain_type: str
    machine: str
    memory_kib: int
    cpu: int
    uefi: bool
    loader: str
    nvram_template: str
    nvram: str
    kernel: str | None
    initrd: str | None
    cmdline: str | None
    boot_order: tuple[str, ...]
    pool: str
    disks: tuple[DiskView, ...]
    seed: str | None
    cdrom_bus: str
    cdrom_target: str
    nics: tuple[NicView, ...]
    console_log: str
    forward: bool
    ssh_port: int | None
    mgmt_mac: str | None
    mgmt_bus: str
    mgmt_addr: str


def console_log_path(lab: Lab, node: Node) -> str:
    return f"{lab.console_dir.rstrip('/')}/{console_log_name(node)}"


def console_log_name(node: Node) -> str:
    return f"{node.domain}.console.log"


def seed_volume_name(node: Node) -> str:
    return f"{node.domain}-seed.iso"


def node_fingerprint(lab: Lab, node: Node, domain_type: str, boot: BootFiles | None,
                     disk_volumes: dict[str, str] | None = None) -> dict[str, Any]:
    """What defines a node's hardware: changes here are drift that `up --recreate` applies."""
    return {
        "type": domain_type,
        "machine": lab.machine,
        "uefi": lab.uefi,
        "cpu": node.cpu,
        "memory_kib": node.memory_kib,
        "boot": node.boot,
        "kernel": asdict(boot) if boot else None,
        "disks": [[d.role, d.target, d.size_bytes, d.format] for d in node.disks],
        "nics": [[n.network, n.mac] for n in node.nics],
        "ssh_port": node.ssh_port,
        "mgmt_mac": node.mgmt_mac,
    }


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def domain_view(
    lab: Lab,
    node: Node,
    *,
    domain_type: str,
    boot: BootFiles | None = None,
    seed: bool = False,
    loader: str = DEFAULT_LOADER,
    nvram_template: str = DEFAULT_NVRAM_TEMPLATE,
    disk_volumes: dict[str, str] | None = None,
) -> DomainView:
    """`disk_volumes` maps a disk role to the volume currently on top of its chain
    (snapshots put new layers on top); by default each disk's base volume."""
    member = lab.stack_of(node.hostname)
    net_names = {n.name: n.libvirt_name for n in lab.networks}
    vols = disk_volumes or {}
    pxe = node.boot == "pxe"
    direct = boot is not None and not pxe
    q35 = lab.machine.startswith("q35") or lab.machine == "q35"
    return DomainView(
        ns=NS,
        lab=lab.name,
        hostname=node.hostname,
        name=node.domain,
        uuid=derived_uuid("domain", lab.name, node.domain),
        stack=member[0] if member else "",
        role=member[1] if member else "",
        hash=fingerprint_hash(node_fingerprint(lab, node, domain_type, boot if direct else None)),
        domain_type=domain_type,
        machine=lab.machine,
        memory_kib=node.memory_kib,
        cpu=node.cpu,
        uefi=lab.uefi,
        loader=loader,
        nvram_template=nvram_template,
        nvram=f"/var/lib/libvirt/qemu/nvram/{node.domain}_VARS.fd",
        kernel=boot.kernel if direct else None,
        initrd=boot.initrd if direct else None,
        cmdline=boot.cmdline if direct else None,
        boot_order=("network", "hd") if pxe else (() if direct else ("hd",)),
        pool=lab.pool_name,
        disks=tuple(
            DiskView(vols.get(d.role, d.volume), d.target, d.format, d.iotune) for d in node.disks
        ),
        seed=seed_volume_name(node) if seed and not pxe else None,
        # the cloud kernel of real and tiny images has no AHCI: on q35 the seed CD-ROM
        # goes on virtio-scsi, on pc on IDE
        cdrom_bus="scsi" if q35 else "ide",
        cdrom_target="sda" if q35 else "hdc",
        nics=tuple(NicView(net_names[n.network], n.mac) for n in node.nics),
        console_log=console_log_path(lab, node),
        forward=node.ssh_port is not None,
        ssh_port=node.ssh_port,
        mgmt_mac=node.mgmt_mac,
        mgmt_bus="pcie.0" if q35 else "pci.0",
        mgmt_addr=MGMT_PCI_ADDR,
    )


def render_domain_xml(view: DomainView) -> str:
    return _render("domain.xml.j2", d=view)


def render_node_metadata(view: DomainView) -> str:
    """labvirt's metadata element alone, for virDomainSetMetadata (stack or role moved)."""
    return _render("metadata.xml.j2", d=view).strip()


@dataclass(frozen=True)
class NetworkView:
    ns: str
    lab: str
    layout_name: str
    name: str
    uuid: str
    hash: str
    forward: str
    bridge: str
    address: str | None
    prefix: int | None
    dhcp_start: str | None
    dhcp_end: str | None


def network_fingerprint(net: Network) -> dict[str, Any]:
    return {
        "forward": net.forward,
        "bridge": net.bridge,
        "address": str(net.address) if net.address else None,
        "dhcp": [str(a) for a in net.dhcp_range] if net.dhcp_range else None,
    }


def network_view(lab: Lab, net: Network) -> NetworkView:
    return NetworkView(
        ns=NS,
        lab=lab.name,
        layout_name=net.name,
        name=net.libvirt_name,
        uuid=derived_uuid("network", lab.name, net.libvirt_name),
        hash=fingerprint_hash(network_fingerprint(net)),
        forward=net.forward,
        bridge=net.bridge,
        address=str(net.address.ip) if net.address else None,
        prefix=net.address.network.prefixlen if net.address else None,
        dhcp_start=str(net.dhcp_range[0]) if net.dhcp_range else None,
        dhcp_end=str(net.dhcp_range[1]) if net.dhcp_range else None,
    )


def render_network_xml(view: NetworkView) -> str:
    return _render("network.xml.j2", n=view)


@dataclass(frozen=True)
class PoolView:
    name: str
    uuid: str
    path: str


def pool_uuid(lab: Lab) -> str:
    return derived_uuid("pool", lab.name, lab.pool_name)


def render_pool_xml(lab: Lab) -> str:
    return _render("pool.xml.j2", p=PoolView(lab.pool_name, pool_uuid(lab), lab.pool_path))


@dataclass(frozen=True)
class VolumeView:
    name: str
    capacity: int
    format: str
    backing: str | None = None
    backing_format: str = "qcow2"


def render_volume_xml(view: VolumeView) -> str:
    return _render("volume.xml.j2", v=view)
