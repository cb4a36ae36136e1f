"""Lab snapshots as qcow2 overlay chains: create, list, restore, delete.

A lab snapshot is one record over the chosen nodes (name, nodes, frozen layer of every
disk, time, stack assignment then). Nodes are handled in parallel; a failure is reported
for its node and leaves that node either as it was or fully switched, never with a
half-built chain; unreferenced layers left by an interrupted run are collected by the next
run, so running the same command again finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from labvirt.errors import InputError, LabvirtError
from labvirt.layers import VolumeNode, next_layer, retarget_disks, unneeded_layers
from labvirt.layout.spec import HOSTNAME_RE
from labvirt.model import Lab, Node
from labvirt.render import VolumeView, render_volume_xml
from labvirt.session import Session
from labvirt.state import LabState
from labvirt.virt import Hypervisor, Observed, ObservedDomain

DEFAULT_SHUTDOWN_TIMEOUT = 60.0


@dataclass
class NodeOutcome:
    node: str
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    ready_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SnapshotReport:
    name: str
    action: str
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)
    seconds: float = 0.0
    collected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.nodes.values())


Progress = Callable[[str, str], None]  # (node, message)


@contextmanager
def connected(lab: Lab, hv: Hypervisor | None) -> Iterator[Hypervisor]:
    """The given connection (tests share one with the test driver), or a new one."""
    if hv is not None:
        yield hv
        return
    with Hypervisor(lab.uri) as own:
        yield own


def live_name(name: str) -> str:
    """The libvirt name of a live (internal) snapshot."""
    return f"labvirt-{name}"


def _check_live(lab: Lab, doms: dict[str, ObservedDomain]) -> None:
    if lab.uefi:
        raise InputError(
            "--live needs BIOS firmware: libvirt 9.0 refuses internal snapshots of UEFI nodes",
            "take an overlay snapshot (without --live), or set uefi: false in the layout")
    off = sorted(h for h, d in doms.items() if not d.running)
    if off:
        raise InputError(f"--live snapshots running nodes; not running: {', '.join(off)}",
                         "start them with `labvirt up`, or snapshot without --live")


def _check_no_live(state: LabState, nodes: tuple[Node, ...], what: str) -> None:
    """Overlay operations move a disk to a new top; internal snapshots live inside the old
    one. Never mix the kinds on a node (libvirt would revert onto a frozen layer)."""
    hosts = {n.hostname for n in nodes}
    clash = {name: sorted(hosts & set(rec.get("layers", {})))
             for name, rec in state.snapshots.items() if rec.get("kind") == "live"}
    clash = {k: v for k, v in clash.items() if v}
    if clash:
        names = ", ".join(sorted(clash))
        nodes_ = ", ".join(sorted({h for v in clash.values() for h in v}))
        raise InputError(
            f"{nodes_} have live snapshots ({names}); {what} would strand them",
            f"delete them first: labvirt snapshot delete {sorted(clash)[0]}")


def _check_name(name: str) -> None:
    if not HOSTNAME_RE.match(name):
        raise InputError(f"{name!r} is not a valid snapshot name",
                         "use letters, digits and '-', like clean or after-dcn0")


def _owned(lab: Lab, obs: Observed, node: Node) -> ObservedDomain:
    dom = obs.domain(node.domain)
    if dom is None:
        raise InputError(f"node {node.hostname} has no domain yet", "run `labvirt up` first")
    if not dom.ours(lab.name):
        raise InputError(f"domain {node.domain} is not this lab's; labvirt will not touch it")
    return dom


def _tops(node: Node, dom: ObservedDomain) -> dict[str, str]:
    """Disk role -> the volume the domain writes to now."""
    by_target = dom.disk_volumes()
    return {d.role: by_target.get(d.target, d.volume) for d in node.disks}


def _referenced(lab: Lab, obs: Observed, state: LabState) -> set[str]:
    keep: set[str] = set()
    for dom in obs.domains:
        if dom.ours(lab.name):
            keep |= set(dom.disk_volumes().values())
    for rec in state.snapshots.values():
        for layers in rec.get("layers", {}).values():
            keep |= set(layers.values())
    return keep


def collect_garbage(lab: Lab, hv: Hypervisor, state: LabState) -> list[str]:
    """Delete layers nothing needs: left by an interrupted run or freed by a delete."""
    obs = hv.observe((lab.pool_name,))
    pool = obs.pool(lab.pool_name)
    if pool is None:
        return []
    prefix = f"{lab.prefix}-"
    # every volume of the pool counts as a child (a volume that is not the lab's may be
    # built on one of its layers), but only the lab's own volumes may go
    vols = [VolumeNode(v.name, v.path, v.backing) for v in pool.volumes]
    foreign = {v.name for v in pool.volumes if not v.name.startswith(prefix)}
    doomed = unneeded_layers(vols, _referenced(lab, obs, state) | foreign)
    for name in doomed:
        hv.delete_volume(lab.pool_name, name)
    return doomed


def _overlay(lab: Lab, hv: Hypervisor, node: Node, backing: dict[str, str],
             existing: set[str]) -> dict[str, str]:
    """A fresh top layer on each disk's given backing volume; target -> new volume.
    The backing path is the one libvirt reports for that volume (not one built from the
    layout's pool_path, which libvirt may spell differently, e.g. `//` collapsed):
    collect_garbage recognises a backing volume by comparing exactly these paths."""
    new: dict[str, str] = {}
    for disk in node.disks:
        name = next_layer(disk, existing)
        existing.add(name)
        below = hv.volume_path(lab.pool_name, backing[disk.role])
        xml = render_volume_xml(VolumeView(name, disk.size_bytes, "qcow2", below, "qcow2"))
        hv.create_volume(lab.pool_name, name, xml)
        new[disk.target] = name
    return new


def _run_parallel(lab: Lab, nodes: tuple[Node, ...], work: Callable[[Node], NodeOutcome],
                  workers: int) -> dict[str, NodeOutcome]:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(nodes))),
                            thread_name_prefix="labvirt-snap") as ex:
        results = list(ex.map(work, nodes))
    return {r.node: r for r in results}


def _guarded(node: Node, body: Callable[[NodeOutcome], None]) -> NodeOutcome:
    outcome = NodeOutcome(node.hostname)
    t0 = time.monotonic()
    try:
        body(outcome)
    except LabvirtError as exc:
        outcome.error = exc.message
    outcome.seconds = time.monotonic() - t0
    return outcome


def _console_marks(lab: Lab, hv: Hypervisor, nodes: list[Node]) -> dict[str, int]:
    from labvirt.ops.provision import console_marks

    return console_marks(lab, hv, [n.hostname for n in nodes])


def _wait(session: Session, lab: Lab, hv: Hypervisor, started: list[Node],
          outcomes: dict[str, NodeOutcome], timeout: float | None,
          marks: dict[str, int] | None = None) -> None:
    """Wait for restarted nodes; `marks` are their console log sizes before the restart."""
    from labvirt.ops.guests import lab_access, wait_ready
    from labvirt.ops.provision import console_text

    marks = marks or {}

    image_nodes = [n for n in started if n.boot == "image"]
    if not image_nodes:
        return
    access = lab_access(session, lab)
    for r in wait_ready(lab, access, image_nodes, timeout=timeout,
                        console=lambda h: console_text(lab, hv, h, since=marks.get(h, 0))):
        outcomes[r.node].ready_seconds = r.seconds
        if not r.ready:
            outcomes[r.node].error = r.message


def create(session: Session, name: str, *, stack: str | None = None,
           nodes: tuple[str, ...] = (), description: str = "", workers: int = 4,
           shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT, wait: bool = True,
           timeout: float | None = None, progress: Progress | None = None,
           hv: Hypervisor | None = None, live: bool = False) -> SnapshotReport:
    """An overlay snapshot (nodes stopped, disks frozen, restarted), or with `live` an
    internal snapshot of disks and memory of running BIOS nodes, restored without reboot."""
    _check_name(name)
    say = progress or (lambda _n, _m: None)
    t0 = time.monotonic()
    with session.store.locked(f"snapshot create {name}"):
        state = session.load_state()
        lab = session.lab(state)
        chosen = lab.select(stack, nodes)
        record = state.snapshots.get(name)
        if record is not None:
            unfinished = record.get("incomplete", [])
            if not unfinished:
                raise InputError(f"snapshot {name!r} already exists",
                                 f"delete it first (labvirt snapshot delete {name}) or pick "
                                 "another name")
            # the same command again finishes an interrupted or partly failed create
            chosen = tuple(lab.node(h) for h in unfinished if _known(lab, h))
        with connected(lab, hv) as hv:
            collected = collect_garbage(lab, hv, state)
            obs = hv.observe((lab.pool_name,))
            pool = obs.pool(lab.pool_name)
            existing = {v.name for v in pool.volumes} if pool else set()
            doms = {n.hostname: _owned(lab, obs, n) for n in chosen}
            if live:
                _check_live(lab, doms)
            else:
                _check_no_live(state, chosen, "an overlay snapshot")
            frozen: dict[str, dict[str, str]] = {}
            running: list[str] = []

            def work(node: Node) -> NodeOutcome:
                def body(out: NodeOutcome) -> None:
                    dom = doms[node.hostname]
                    if live:
                        say(node.hostname, "taking a live snapshot")
                        hv.create_internal_snapshot(node.domain, live_name(name), description)
                        frozen[node.hostname] = _tops(node, dom)
                        running.append(node.hostname)
                        out.steps.append("disk and memory saved")
                        return
                    was_running = dom.running
                    say(node.hostname, "stopping")
                    out.steps.append(hv.stop_domain(node.domain, shutdown_timeout))
                    tops = _tops(node, dom)
                    say(node.hostname, "freezing disks")
                    new = _overlay(lab, hv, node, tops, existing)
                    hv.define_domain(node.domain,
                                     retarget_disks(hv.inactive_xml(node.domain), new))
                    frozen[node.hostname] = tops
                    out.steps.append(f"froze {len(tops)} disk(s)")
                    if was_running:
                        running.append(node.hostname)
                        say(node.hostname, "starting")
                        hv.start_domain(node.domain)
                        out.steps.append("started")
                return _guarded(node, body)

            marks = _console_marks(lab, hv, chosen)
            outcomes = _run_parallel(lab, chosen, work, workers)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = record or {
                "created": now, "description": description,
                "kind": "live" if live else "overlay",
                "nodes": [], "layers": {}, "stacks": {}, "running": [],
            }
            for host, layers in frozen.items():
                record["layers"][host] = layers
                member = lab.stack_of(host)
                record["stacks"][host] = list(member) if member else None
                if host in running:
                    record["running"].append(host)
            record["nodes"] = [n.hostname for n in lab.nodes if n.hostname in record["layers"]]
            record["incomplete"] = sorted(h for h, o in outcomes.items() if not o.ok)
            if record["layers"]:
                state.snapshots[name] = record
                session.store.save(state)
            if wait and not live:
                _wait(session, lab, hv,
                      [lab.node(h) for h in running if outcomes[h].ok], outcomes, timeout,
                      marks)
    report = SnapshotReport(name, "create", outcomes, time.monotonic() - t0, collected)
    return report


def restore(session: Session, name: str, *, stack: str | None = None,
            nodes: tuple[str, ...] = (), workers: int = 4, wait: bool = True,
            timeout: float | None = None, progress: Progress | None = None,
            confirm: Callable[[list[str]], bool] | None = None,
            hv: Hypervisor | None = None) -> SnapshotReport:
    """Put the chosen nodes (default: all the snapshot's) back to the snapshot.
    `confirm` sees the running nodes about to be reset and may refuse."""
    say = progress or (lambda _n, _m: None)
    t0 = time.monotonic()
    with session.store.locked(f"snapshot restore {name}"):
        state = session.load_state()
        lab = session.lab(state)
        record = _record(state, name)
        if stack or nodes:
            chosen = lab.select(stack, nodes)
        else:
            chosen = tuple(lab.node(h) for h in record["nodes"] if _known(lab, h))
        absent = [n.hostname for n in chosen if n.hostname not in record["layers"]]
        if absent:
            raise InputError(
                f"snapshot {name!r} does not cover {', '.join(absent)}",
                f"it holds: {', '.join(record['nodes'])}; restore those, or take a new "
                "snapshot of these nodes")
        with connected(lab, hv) as hv:
            collect_garbage(lab, hv, state)
            obs = hv.observe((lab.pool_name,))
            pool = obs.pool(lab.pool_name)
            existing = {v.name for v in pool.volumes} if pool else set()
            doms = {n.hostname: _owned(lab, obs, n) for n in chosen}
            live = record.get("kind") == "live"
            if live:
                moved = [n.hostname for n in chosen
                         if _tops(n, doms[n.hostname]) != record["layers"][n.hostname]]
                if moved:
                    raise InputError(
                        f"live snapshot {name!r}: the disks of {', '.join(moved)} moved to "
                        "other layers since (an overlay snapshot or restore)",
                        f"delete it (labvirt snapshot delete {name}) and take a new one")
            else:
                _check_no_live(state, chosen, "an overlay restore")
            for node in chosen:
                roles = {d.role for d in node.disks}
                if set(record["layers"][node.hostname]) != roles:
                    raise InputError(
                        f"snapshot {name!r}: {node.hostname} has other disks now "
                        f"({', '.join(sorted(roles))}) than when it was taken "
                        f"({', '.join(sorted(record['layers'][node.hostname]))})",
                        "restore the layout the snapshot was taken with, or delete it")
                for role, vol in record["layers"][node.hostname].items():
                    if vol not in existing:
                        raise InputError(
                            f"snapshot {name!r}: layer {vol} of {node.hostname} ({role}) is "
                            "gone (was the node recreated?)",
                            f"delete the snapshot: labvirt snapshot delete {name}")
            running_now = [h for h, d in doms.items() if d.running]
            if running_now and confirm is not None and not confirm(running_now):
                raise InputError("restore cancelled; nothing was changed")
            t0 = time.monotonic()  # time the restore, not the user's answer

            def work(node: Node) -> NodeOutcome:
                def body(out: NodeOutcome) -> None:
                    if live:
                        say(node.hostname, "reverting disk and memory")
                        hv.revert_internal_snapshot(node.domain, live_name(name))
                        out.steps.append("reverted, running")
                        return
                    say(node.hostname, "stopping")
                    hv.destroy_domain(node.domain)
                    out.steps.append("stopped")
                    layers = record["layers"][node.hostname]
                    say(node.hostname, "restoring disks")
                    new = _overlay(lab, hv, node, layers, existing)
                    hv.define_domain(node.domain,
                                     retarget_disks(hv.inactive_xml(node.domain), new))
                    out.steps.append(f"restored {len(new)} disk(s)")
                    if node.boot == "image" or node.hostname in record.get("running", []):
                        say(node.hostname, "starting")
                        hv.start_domain(node.domain)
                        out.steps.append("started")
                return _guarded(node, body)

            marks = _console_marks(lab, hv, chosen)
            outcomes = _run_parallel(lab, chosen, work, workers)
            collected = collect_garbage(lab, hv, session.load_state())
            if live:
                _set_clocks(session, lab, [n for n in chosen if outcomes[n.hostname].ok
                                           and n.boot == "image"], outcomes)
            elif wait:
                started = [n for n in chosen if outcomes[n.hostname].ok
                           and "started" in outcomes[n.hostname].steps]
                _wait(session, lab, hv, started, outcomes, timeout, marks)
    return SnapshotReport(name, "restore", outcomes, time.monotonic() - t0, collected)


def _set_clocks(session: Session, lab: Lab, nodes: list[Node],
                outcomes: dict[str, NodeOutcome]) -> None:
    """A guest reverted with its memory believes it is still the snapshot's time."""
    from labvirt.ops.guests import lab_access
    from labvirt.sshclient import run

    if not nodes:
        return
    access = lab_access(session, lab)

    def one(node: Node) -> None:
        t0 = time.monotonic()
        try:
            result = run(access.target(lab, node),
                         f"sudo -n date -u -s @{int(time.time())} >/dev/null", timeout=30)
        except LabvirtError as exc:
            outcomes[node.hostname].error = f"reverted, but the clock was not set: {exc.message}"
            return
        if result.exit_status != 0:
            outcomes[node.hostname].error = (f"reverted, but setting the clock failed: "
                                             f"{result.stderr.strip()}")
        else:
            outcomes[node.hostname].steps.append("clock set")
            outcomes[node.hostname].ready_seconds = time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as ex:
        list(ex.map(one, nodes))


def _known(lab: Lab, host: str) -> bool:
    return any(n.hostname == host for n in lab.nodes)


def _record(state: LabState, name: str) -> dict[str, Any]:
    if name not in state.snapshots:
        known = ", ".join(sorted(state.snapshots)) or "none"
        raise InputError(f"no snapshot named {name!r}", f"snapshots of this lab: {known}")
    return state.snapshots[name]


def delete(session: Session, name: str, hv: Hypervisor | None = None) -> list[str]:
    """Forget a snapshot and delete the layers only it needed. Layers that other layers
    still build on are kept, so later snapshots and the running disks stay whole."""
    with session.store.locked(f"snapshot delete {name}"):
        state = session.load_state()
        lab = session.lab(state)
        record = _record(state, name)
        with connected(lab, hv) as hv:
            if record.get("kind") == "live":
                for host in record.get("layers", {}):
                    if _known(lab, host):
                        hv.delete_internal_snapshot(lab.node(host).domain, live_name(name))
            del state.snapshots[name]
            session.store.save(state)
            return collect_garbage(lab, hv, state)


def listing(session: Session) -> list[dict[str, Any]]:
    state = session.load_state()
    out = []
    for name, rec in state.snapshots.items():
        out.append({
            "name": name,
            "created": rec.get("created"),
            "description": rec.get("description", ""),
            "kind": rec.get("kind", "overlay"),
            "nodes": rec.get("nodes", []),
            "incomplete": rec.get("incomplete", []),
            "stacks": rec.get("stacks", {}),
            "layers": rec.get("layers", {}),
        })
    return out

