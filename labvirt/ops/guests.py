"""Guests that come up ready: their cloud-init seeds, waiting for ssh, running commands."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labvirt.errors import InputError, LabvirtError
from labvirt.keys import KeyPair, host_key, lab_key, write_known_hosts
from labvirt.model import Lab, Node
from labvirt.outputs.access import endpoint
from labvirt.seed import SeedInterface, SeedSpec, SeedUser, build_seed_iso, render_seed_files
from labvirt.session import Session
from labvirt.sshclient import CommandResult, HostKeyMismatch, Target, Unreachable, run


@dataclass(frozen=True)
class Access:
    """What it takes to reach the lab's nodes: the client key and the nodes' host keys."""

    key: KeyPair
    host_keys: dict[str, KeyPair]
    known_hosts: Path

    def target(self, lab: Lab, node: Node) -> Target:
        ep = endpoint(lab, node)
        return Target(node.hostname, ep.host, ep.port, lab.ssh_user, self.key.private_path,
                      self.host_keys[node.hostname].public_line)


def lab_access(session: Session, lab: Lab) -> Access:
    key = lab_key(lab, session.key_path(lab))
    hosts = {n.hostname: host_key(session.state_dir, n) for n in lab.nodes}
    known = write_known_hosts(lab, session.state_dir, session.known_hosts_path())
    return Access(key, hosts, known)


def seed_spec(lab: Lab, node: Node, access: Access) -> SeedSpec:
    users = [SeedUser(lab.ssh_user, (access.key.public_line,))]
    for name, keys in lab.extra_users:
        if name != lab.ssh_user:
            users.append(SeedUser(name, (*keys, access.key.public_line)))
    interfaces = []
    cp = lab.ctlplane
    ctl_done = False
    for i, nic in enumerate(node.nics):
        if nic.network == cp.network and not ctl_done and node.ctlplane_ip is not None:
            ctl_done = True
            interfaces.append(SeedInterface(
                mac=nic.mac, name=f"nic{i}",
                addresses=(f"{node.ctlplane_ip}/{cp.cidr.prefixlen}",),
                gateway4=None if node.is_undercloud else str(cp.gateway),
                nameservers=tuple(str(a) for a in cp.dns),
            ))
        elif lab.network(nic.network).dhcp_range is not None:
            interfaces.append(SeedInterface(mac=nic.mac, name=f"nic{i}", dhcp4=True))
    if node.mgmt_mac is not None:
        interfaces.append(SeedInterface(mac=node.mgmt_mac, name="mgmt0", dhcp4=True))
    hk = access.host_keys[node.hostname]
    return SeedSpec(
        instance_id=f"{lab.name}-{node.hostname}",
        hostname=node.hostname,
        fqdn=f"{node.hostname}.{cp.dns_domain}",
        users=tuple(users),
        host_keys={"ed25519": (hk.private_pem, hk.public_line)},
        interfaces=tuple(interfaces),
    )


def seed_iso(lab: Lab, node: Node, access: Access) -> bytes:
    return build_seed_iso(render_seed_files(seed_spec(lab, node, access)))


@dataclass(frozen=True)
class Readiness:
    node: str
    ready: bool
    seconds: float
    message: str = ""


def wait_ready(lab: Lab, access: Access, nodes: list[Node], *, timeout: float = 300.0,
               workers: int = 10, progress: Callable[[str, str], None] | None = None,
               console: Callable[[str], str] | None = None) -> list[Readiness]:
    """Wait until each node answers ssh with its own hostname (host key checked)."""
    say = progress or (lambda _n, _m: None)

    def one(node: Node) -> Readiness:
        t0 = time.monotonic()
        target = access.target(lab, node)
        last = "no answer yet"
        while time.monotonic() - t0 < timeout:
            try:
                result = run(target, "hostname", timeout=20)
            except HostKeyMismatch as exc:
                return Readiness(node.hostname, False, time.monotonic() - t0, exc.message)
            except Unreachable as exc:
                last = exc.message
                time.sleep(1.0)
                continue
            name = result.stdout.strip()
            if result.exit_status == 0 and name == node.hostname:
                say(node.hostname, "ready")
                return Readiness(node.hostname, True, time.monotonic() - t0)
            last = f"answers as {name!r}, expected {node.hostname!r}"
            time.sleep(1.0)
        tail = console(node.hostname) if console else ""
        msg = f"not ssh-ready after {timeout:.0f} s ({last})"
        if tail:
            msg += "\n    console (last lines):\n      " + tail.replace("\n", "\n      ")
        return Readiness(node.hostname, False, time.monotonic() - t0, msg)

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(nodes)),
                            thread_name_prefix="labvirt-wait") as ex:
        return list(ex.map(one, nodes))


@dataclass(frozen=True)
class ExecOutcome:
    node: str
    result: CommandResult | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.exit_status == 0


def exec_on(session: Session, nodes: tuple[str, ...], stack: str | None, command: str,
            workers: int = 8) -> list[ExecOutcome]:
    lab = session.lab()
    selected = lab.select(stack, nodes)
    if not command.strip():
        raise InputError("no command given", "labvirt exec --stack dcn0 -- uptime")
    access = lab_access(session, lab)

    def one(node: Node) -> ExecOutcome:
        try:
            return ExecOutcome(node.hostname, run(access.target(lab, node), command), None)
        except LabvirtError as exc:
            return ExecOutcome(node.hostname, None, exc.message)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(selected))),
                            thread_name_prefix="labvirt-exec") as ex:
        return list(ex.map(one, selected))
