"""Carries out a plan on the hypervisor, node by node in a bounded pool of workers.

Shared objects (networks, the pool, shared uploads) come first, in order; then every node
runs its own actions in order (volumes, uploads, define, start) in parallel with the
others. A failing node stops only its own remaining steps. Progress is reported through a
callback of `Event`s so the CLI can draw it and tests can record it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from labvirt.errors import LabvirtError
from labvirt.layers import belongs_to
from labvirt.model import Lab
from labvirt.plan import Action, Plan
from labvirt.virt import Hypervisor

DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Event:
    node: str | None  # None: a shared object
    action: str
    target: str
    status: str  # "start" | "progress" | "done" | "failed"
    message: str = ""


@dataclass
class NodeResult:
    node: str
    done: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def summary(self) -> str:
        if self.error:
            return "failed"
        if not self.done:
            return "unchanged"
        kinds = {d.split()[0] for d in self.done}
        if "remove-domain" in kinds:
            return "recreated"
        if "define-domain" in kinds and "start-domain" in kinds:
            return "created and started"
        if "define-domain" in kinds:
            return "created (off)"
        if "start-domain" in kinds:
            return "started"
        return "updated"


@dataclass
class ExecutionReport:
    shared: list[str] = field(default_factory=list)
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    seconds: float = 0.0
    shared_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.shared_error is None and all(r.ok for r in self.nodes.values())


Payloads = Callable[[str], "bytes | Path"]
Progress = Callable[[Event], None]


class Executor:
    def __init__(self, hv: Hypervisor, lab: Lab, payloads: Payloads, *,
                 workers: int = DEFAULT_WORKERS, progress: Progress | None = None) -> None:
        self.hv = hv
        self.lab = lab
        self.payloads = payloads
        self.workers = max(1, workers)
        self.progress = progress or (lambda _e: None)

    def _apply(self, action: Action) -> None:
        hv, pool = self.hv, self.lab.pool_name
        match action.kind:
            case "create-network":
                hv.define_network(action.target, action.xml)
                hv.start_network(action.target)
            case "start-network":
                hv.start_network(action.target)
            case "create-pool":
                hv.ensure_pool(action.target, action.xml)
            case "start-pool":
                hv.ensure_pool(action.target, "")
            case "create-volume":
                hv.create_volume(pool, action.target, action.xml)
            case "upload":
                # shared uploads (a base image) run alone: they may refresh the pool
                hv.upload_volume(pool, action.target, self.payloads(action.target),
                                 refresh=action.node is None)
            case "remove-domain":
                self.remove_node(action.node or "")
            case "define-domain":
                hv.define_domain(action.target, action.xml)
            case "update-metadata":
                hv.set_node_metadata(action.target, action.xml)
            case "start-domain":
                hv.start_domain(action.target)
            case _:  # pragma: no cover - a plan only holds the kinds above
                raise AssertionError(f"unknown action {action.kind}")

    def remove_node(self, hostname: str) -> None:
        """Destroy and undefine a node and delete its volumes (for --recreate)."""
        node = self.lab.node(hostname)
        self.hv.destroy_domain(node.domain)
        self.hv.undefine_domain(node.domain)
        pool = self.hv.observe((self.lab.pool_name,)).pool(self.lab.pool_name)
        volumes = [v.name for v in pool.volumes] if pool else []
        # the disks with every snapshot layer: a rebuilt node starts from blank disks
        for disk in node.disks:
            for name in volumes:
                if belongs_to(disk, name):
                    self.hv.delete_volume(self.lab.pool_name, name)

    def _run_one(self, action: Action) -> None:
        self.progress(Event(action.node, action.kind, action.target, "start", action.detail))
        try:
            self._apply(action)
        except LabvirtError as exc:
            self.progress(Event(action.node, action.kind, action.target, "failed", exc.message))
            raise
        self.progress(Event(action.node, action.kind, action.target, "done", action.detail))

    def _run_node(self, hostname: str, actions: list[Action]) -> NodeResult:
        result = NodeResult(hostname)
        t0 = time.monotonic()
        for action in actions:
            try:
                self._run_one(action)
            except LabvirtError as exc:
                result.error = f"{action.kind} {action.target}: {exc.message}"
                break
            result.done.append(action.describe())
        result.seconds = time.monotonic() - t0
        return result

    def run(self, plan: Plan) -> ExecutionReport:
        report = ExecutionReport()
        t0 = time.monotonic()
        for action in plan.shared:
            try:
                self._run_one(action)
            except LabvirtError as exc:
                report.shared_error = f"{action.kind} {action.target}: {exc.message}"
                report.seconds = time.monotonic() - t0
                return report
            report.shared.append(action.describe())
        by_node = {n.hostname: plan.for_node(n.hostname) for n in self.lab.nodes}
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="labvirt") as pool:
            futures = {h: pool.submit(self._run_node, h, acts) for h, acts in by_node.items()}
            for hostname, fut in futures.items():
                report.nodes[hostname] = fut.result()
        report.seconds = time.monotonic() - t0
        return report
