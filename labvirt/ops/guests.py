"""Guests that come up ready: their cloud-init seeds, waiting for ssh, running commands."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from labvirt.console import ConsoleReading, excerpt, read_console
from labvirt.errors import InputError, LabvirtError
from labvirt.keys import KeyPair, host_key, lab_key, write_known_hosts
from labvirt.model import Lab, Node
from labvirt.outputs.access import endpoint
from labvirt.seed import SeedInterface, SeedSpec, SeedUser, build_seed_iso, render_seed_files
from labvirt.session import Session
from labvirt.sshclient import (
    AuthRefused,
    CommandResult,
    HostKeyMismatch,
    NoSshAnswer,
    NotListening,
    Target,
    Unreachable,
    run,
)


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


# One ssh round trip answers both questions: who are you, and is cloud-init done? Images
# without cloud-init (the tiny one) print only their hostname.
READY_PROBE = (
    "hostname; if command -v cloud-init >/dev/null 2>&1; then "
    "if [ -e /var/lib/cloud/instance/boot-finished ]; then "
    "cloud-init status 2>/dev/null | sed -n 's/^status: */cloud-init: /p'; "
    "else echo 'cloud-init: running'; fi; fi"
)
CONSOLE_EVERY = 3.0  # seconds between console reads of one waiting node


def default_ready_timeout(lab: Lab) -> float:
    """How long a wait for ssh lasts unless the user says: the tiny image is ready in
    seconds; a distribution image under software emulation takes minutes per node."""
    if lab.image == "tiny":
        return 300.0
    return 900.0 if lab.domain_type != "kvm" else 600.0


@dataclass(frozen=True)
class Readiness:
    """How a node's wait ended. `state` is one of: ready, booting (its console never
    reached the ready point), refused (booted, ssh refuses labvirt's key), no-network
    (booted, the forward accepts but nothing speaks ssh), not-listening, host-key,
    cloud-init-failed, wrong-host."""

    node: str
    ready: bool
    seconds: float
    message: str = ""
    state: str = "ready"


def _indent(text: str) -> str:
    return "      " + text.replace("\n", "\n      ")


def judge(node: str, timeout: float, seconds: float, last: Unreachable | None,
          reading: ConsoleReading | None, wrong_name: str | None = None) -> Readiness:
    """Why a node is not ready after `timeout`: from what ssh answered last and what its
    console shows, the one of its possible states that tells the user what to do."""
    shown = ""
    if reading is not None:
        shown = "\n    console (errors and last lines):\n" + _indent(excerpt(reading))
    booted = reading is not None and reading.booted
    if wrong_name is not None:
        return Readiness(node, False, seconds,
                         f"answers ssh as {wrong_name!r}, not as {node!r}: another guest "
                         "holds its address or port (check `labvirt status`)" + shown,
                         "wrong-host")
    if isinstance(last, AuthRefused):
        return Readiness(
            node, False, seconds,
            f"booted, but refuses labvirt: {last.message.split(': ', 1)[-1]}; the guest "
            "holds another key than the lab's now (was the lab's key replaced?)"
            "\n    fix: give it a fresh seed with the current key: "
            f"`labvirt up --recreate {node}`" + shown, "refused")
    if booted and isinstance(last, NoSshAnswer):
        return Readiness(
            node, False, seconds,
            f"booted, but not ssh-ready after {timeout:.0f} s: its ssh forward accepts "
            "connections and nothing speaks ssh behind it: no network inside the guest "
            "(its management NIC got no address, or sshd does not run)"
            "\n    fix: read the console below for network or cloud-init errors; "
            f"`labvirt console {node}` shows all of it" + shown, "no-network")
    if isinstance(last, NotListening):
        return Readiness(
            node, False, seconds,
            f"not ssh-ready after {timeout:.0f} s: {last.message.split(': ', 1)[-1]} "
            "(is its domain running? see `labvirt status`)" + shown, "not-listening")
    why = f" ({last.message.split(': ', 1)[-1]})" if last is not None else ""
    if reading is not None and reading.finished and last is not None:
        return Readiness(node, False, seconds,
                         f"booted, but not ssh-ready after {timeout:.0f} s{why}" + shown,
                         "no-network")
    point = (f"still booting after {timeout:.0f} s: its console has not reached the "
             "ready point" if reading is not None else
             f"not ssh-ready after {timeout:.0f} s")
    stage = f"; last stage {reading.stage}" if reading is not None and reading.stage else ""
    return Readiness(
        node, False, seconds,
        f"{point}{stage}{why}"
        "\n    fix: on a slow or busy host give it longer "
        f"(`--timeout {max(900, 2 * timeout):.0f}`); "
        f"watch it with `labvirt console {node}`" + shown, "booting")


def wait_ready(lab: Lab, access: Access, nodes: list[Node], *, timeout: float | None = None,
               workers: int = 10, progress: Callable[[str, str], None] | None = None,
               console: Callable[[str], str] | None = None) -> list[Readiness]:
    """Wait until each node answers ssh with its own hostname (host key checked) and, on
    images with cloud-init, cloud-init has finished. While waiting, read each node's
    console: a failed cloud-init stage, or a finished boot whose ssh refuses labvirt's
    key, ends its wait at once instead of at the timeout. `progress(node, text)` hears
    each node's boot stage (a cloud-init stage or its last console line), then "ready"."""
    say = progress or (lambda _n, _m: None)
    limit: float = default_ready_timeout(lab) if timeout is None else timeout

    def one(node: Node) -> Readiness:
        t0 = time.monotonic()
        target = access.target(lab, node)
        last: Unreachable | None = None
        wrong: str | None = None
        reading: ConsoleReading | None = None
        read_at = -CONSOLE_EVERY
        told = ""

        def look() -> None:
            nonlocal reading, read_at, told
            if console is None or time.monotonic() - read_at < CONSOLE_EVERY:
                return
            read_at = time.monotonic()
            reading = read_console(console(node.hostname))
            line = reading.stage or reading.last_line[:60]
            if line and line != told:
                told = line
                say(node.hostname, line)

        while True:
            elapsed = time.monotonic() - t0
            look()
            if reading is not None and reading.failed:
                return Readiness(
                    node.hostname, False, elapsed,
                    "cloud-init failed inside the guest: it will not become ready"
                    "\n    fix: read the errors below (often the seed's network-config or "
                    f"user-data); `labvirt console {node.hostname}` shows all of it"
                    "\n    console (errors and last lines):\n" + _indent(excerpt(reading)),
                    "cloud-init-failed")
            if elapsed >= limit:
                break
            try:
                result = run(target, READY_PROBE, timeout=20)
            except HostKeyMismatch as exc:
                return Readiness(node.hostname, False, elapsed, exc.message, "host-key")
            except AuthRefused as exc:
                last = exc
                if reading is not None and reading.finished:
                    # the image says it is ready and still refuses: no wait will help
                    return judge(node.hostname, limit, elapsed, last, reading)
                time.sleep(1.0)
                continue
            except Unreachable as exc:
                last = exc
                time.sleep(1.0)
                continue
            lines = result.stdout.splitlines()
            name = lines[0].strip() if lines else ""
            ci = next((x.split(":", 1)[1].strip() for x in lines[1:]
                       if x.startswith("cloud-init:")), "done")
            if result.exit_status == 0 and name == node.hostname:
                if ci == "running":
                    if told != "cloud-init running":
                        told = "cloud-init running"
                        say(node.hostname, told)
                    time.sleep(1.0)
                    continue
                if ci == "error":
                    detail = run(target, "cloud-init status --long 2>&1 || true",
                                 timeout=60).stdout.strip()
                    return Readiness(
                        node.hostname, False, time.monotonic() - t0,
                        "cloud-init finished with errors inside the guest"
                        "\n    fix: `labvirt ssh " + node.hostname + " -- sudo cat "
                        "/var/log/cloud-init.log` says more\n    cloud-init status --long:\n"
                        + _indent(detail), "cloud-init-failed")
                say(node.hostname, "ready")
                return Readiness(node.hostname, True, time.monotonic() - t0)
            wrong = name
            time.sleep(1.0)
        if console is not None:
            read_at = -CONSOLE_EVERY
            look()
        return judge(node.hostname, limit, time.monotonic() - t0, last, reading, wrong)

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
