"""`labvirt up`, `plan`, `status` and `down`: making the lab real, and taking it away."""

from __future__ import annotations

import hashlib
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from labvirt.errors import InputError, LabvirtError
from labvirt.executor import DEFAULT_WORKERS, Event, ExecutionReport, Executor
from labvirt.layers import belongs_to
from labvirt.model import Lab
from labvirt.ops.guests import Access, Readiness, wait_ready
from labvirt.plan import Plan, Provision, Upload, make_plan
from labvirt.render import (
    DEFAULT_LOADER,
    DEFAULT_NVRAM_TEMPLATE,
    BootFiles,
    console_log_name,
    pool_uuid,
    seed_volume_name,
)
from labvirt.session import Session
from labvirt.virt import Hypervisor, Observed

GB = 1000**3
TINY_PREFIX = "labvirt-tiny-"
BASE_PREFIX = "labvirt-base-"


def cache_dir() -> Path:
    env = os.environ.get("LABVIRT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "labvirt"


@dataclass
class Prepared:
    lab: Lab
    provision: Provision
    payloads: dict[str, Callable[[], bytes | Path]] = field(default_factory=dict)
    access: Access | None = None

    def payload(self, volume: str) -> bytes | Path:
        return self.payloads[volume]()


def resolve_domain_type(lab: Lab, hv: Hypervisor) -> str:
    types = hv.domain_types()
    if lab.domain_type != "auto":
        if lab.uri.startswith("test:"):
            return lab.domain_type
        if lab.domain_type not in types:
            raise InputError(
                f"the hypervisor offers no domain type {lab.domain_type!r} "
                f"(it has: {', '.join(sorted(types)) or 'none'})",
                "set labvirt.domain_type: qemu (software emulation) or install qemu-system-x86",
            )
        return lab.domain_type
    if "kvm" in types:
        return "kvm"
    return "qemu"


def _firmware(lab: Lab, hv: Hypervisor, domain_type: str) -> tuple[str, str]:
    if not lab.uefi or lab.uri.startswith("test:"):
        return DEFAULT_LOADER, DEFAULT_NVRAM_TEMPLATE
    caps = hv.domain_capabilities(domain_type, lab.machine)
    values = [v.text or "" for v in caps.iterfind("./os/loader/value")] if caps is not None else []
    plain = [v for v in values if "secboot" not in v and ".ms." not in v]
    if not (plain or values):
        raise InputError(
            "the layout asks for UEFI (uefi: true) but the hypervisor offers no OVMF firmware",
            "apt-get install ovmf, or set uefi: false in the layout",
        )
    loader = sorted(plain or values, key=lambda v: ("4M" not in v, v))[0]
    return loader, loader.replace("CODE", "VARS")


def prepare(session: Session, lab: Lab, hv: Hypervisor,
            progress: Callable[[str], None] | None = None) -> Prepared:
    """Decide domain type and firmware, and gather boot artifacts to upload."""
    domain_type = resolve_domain_type(lab, hv)
    loader, nvram = _firmware(lab, hv, domain_type)
    payloads: dict[str, Callable[[], bytes | Path]] = {}
    uploads: list[Upload] = []
    boot = None
    seeds = False
    base_path: str | None = None
    base_format = "qcow2"
    if any(n.boot == "image" for n in lab.nodes):
        if lab.image == "tiny":
            from labvirt.image.tiny import build_tiny_image

            tiny = build_tiny_image(cache_dir(), progress=progress)
            kname = f"{TINY_PREFIX}{tiny.version}-vmlinuz"
            iname = f"{TINY_PREFIX}{tiny.version}-initrd.img"
            for name, path in ((kname, tiny.kernel), (iname, tiny.initrd)):
                payloads[name] = path.read_bytes
                uploads.append(Upload(name, path.stat().st_size, None))
            pool = lab.pool_path.rstrip("/")
            boot = BootFiles(f"{pool}/{kname}", f"{pool}/{iname}", tiny.cmdline)
            seeds = True
        elif lab.image is None:
            raise InputError(
                "image-boot nodes need a base image and the layout names none",
                "set labvirt.image: tiny (the rehearsal image) or a path to a cloud image; "
                "or labvirt.boot: pxe",
            )
        else:
            base = base_image(lab, hv)
            payloads[base.volume] = lambda: base.path  # streamed from the file
            uploads.append(Upload(base.volume, base.size, None))
            seeds = True
            base_path, base_format = f"{lab.pool_path.rstrip('/')}/{base.volume}", base.format
    access = None
    if seeds:
        from labvirt.ops.guests import lab_access, seed_iso

        access = lab_access(session, lab)
        for node in lab.nodes:
            if node.boot != "image":
                continue
            name = seed_volume_name(node)
            payloads[name] = partial(seed_iso, lab, node, access)
            uploads.append(Upload(name, 0, node.hostname))
    prov = Provision(domain_type=domain_type, loader=loader, nvram_template=nvram, boot=boot,
                     uploads=tuple(uploads), seeds=seeds, base_volume=base_path,
                     base_format=base_format)
    return Prepared(lab, prov, payloads, access)


@dataclass(frozen=True)
class BaseImage:
    path: Path
    volume: str
    format: str  # qcow2 | raw
    size: int  # bytes in the file
    virtual_size: int  # bytes the guest sees


QCOW2_MAGIC = b"QFI\xfb"


def base_image(lab: Lab, hv: Hypervisor) -> BaseImage:
    """The layout's base cloud image, checked; uploaded once into the pool as a volume
    named after its identity, so every node's root disk is a linked clone of it."""
    assert lab.image is not None
    if not hv.host().is_local:
        raise InputError("base images are read from this machine, and the hypervisor is "
                         f"remote ({lab.uri})", "use a local libvirt URI")
    from labvirt.image.fetch import resolve_base_image

    path = resolve_base_image(lab.image, cache_dir())  # a path, or a fetched image's name
    try:
        st = path.stat()
        with path.open("rb") as f:
            header = f.read(32)
    except OSError as exc:
        raise InputError(f"cannot read the base image {path}: {exc.strerror}",
                         "set labvirt.image to a CentOS Stream or RHEL GenericCloud qcow2 "
                         "file, or to tiny") from None
    if header[:4] == QCOW2_MAGIC:
        fmt, virtual = "qcow2", int.from_bytes(header[24:32], "big")
    else:
        fmt, virtual = "raw", st.st_size
    ident = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    volume = f"{BASE_PREFIX}{ident.hexdigest()[:12]}.{'qcow2' if fmt == 'qcow2' else 'img'}"
    small = [n.hostname for n in lab.nodes if n.boot == "image"
             and n.disks[0].size_bytes < virtual]
    if small:
        raise InputError(
            f"the base image's disk is {virtual / GB:.1f} GB, larger than the root disk of "
            f"{', '.join(small)} ({lab.node(small[0]).disks[0].size_bytes / GB:.1f} GB)",
            "raise disksize (or labvirt.resize.disksize) to at least the image's size")
    return BaseImage(path, volume, fmt, st.st_size, virtual)


def host_routes() -> tuple[tuple[str, str], ...]:
    """This machine's IPv4 routes as (cidr, device), from /proc/net/route."""
    import ipaddress

    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return ()
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(parts[7], 16).to_bytes(4, "little"))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        routes.append((str(net), parts[0]))
    return tuple(routes)


def trusted_uploads(lab: Lab, obs: Observed) -> frozenset[str]:
    """Uploaded volumes known complete: an upload finishes before the domain that uses it
    is defined, so a volume referenced by one of our defined domains is whole."""
    pool = lab.pool_path.rstrip("/") + "/"
    names = set()
    for dom in obs.domains:
        if not dom.ours(lab.name):
            continue
        root = ET.fromstring(dom.xml)
        for tag in ("kernel", "initrd"):
            text = root.findtext(f"./os/{tag}") or ""
            if text.startswith(pool):
                names.add(text[len(pool):])
        for src in root.iterfind("./devices/disk/source"):
            if src.get("volume"):
                names.add(src.get("volume", ""))
    # a base image is whole once a root disk has been cloned from it
    for p in obs.pools:
        for vol in p.volumes:
            if vol.backing and vol.backing.startswith(pool):
                names.add(vol.backing[len(pool):])
    return frozenset(names)


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def preflight(lab: Lab, hv: Hypervisor, prepared: Prepared, plan: Plan) -> Preflight:
    """Refuse, with numbers, what cannot work: disk, emulator, pool path, ports (memory is
    checked earlier, by memory_check)."""
    result = Preflight()
    host = hv.host()
    to_start = {a.node for a in plan.actions if a.kind == "start-domain"}
    if host.is_local and not lab.uri.startswith("test:"):
        creating = any(a.kind in ("create-volume", "upload") for a in plan.actions)
        if creating:
            probe = Path(lab.pool_path)
            while not probe.exists():
                probe = probe.parent
            st = os.statvfs(probe)
            free = st.f_bavail * st.f_frsize
            upload_bytes = sum(u.size for u in prepared.provision.uploads)
            need = upload_bytes + len(lab.nodes) * 64 * 1024**2
            if free < need:
                result.problems.append(
                    f"the pool directory {lab.pool_path} needs about {need / GB:.1f} GB free, "
                    f"{probe} has {free / GB:.1f} GB")
            virtual = sum(d.size_bytes for n in lab.nodes for d in n.disks)
            if virtual > free:
                result.notes.append(
                    f"disks are thin: they may grow to {virtual / GB:.0f} GB, "
                    f"{probe} has {free / GB:.0f} GB free")
            if not os.access(probe, os.W_OK):
                result.problems.append(f"the pool directory {lab.pool_path} is not writable "
                                       f"({probe} is not writable by this user)")
        caps = hv.domain_capabilities(prepared.provision.domain_type, lab.machine)
        if caps is None:
            result.problems.append(
                f"QEMU for x86_64 with domain type {prepared.provision.domain_type} and machine "
                f"{lab.machine} is not available; apt-get install qemu-system-x86")
        if lab.access == "forward":
            # a node being rebuilt holds its own port until it is removed
            rebuilt = {a.node for a in plan.actions if a.kind == "remove-domain"}
            for h in sorted(to_start - rebuilt):
                port = lab.node(h).ssh_port
                if port is not None and not port_free(port):
                    result.problems.append(
                        f"port {port} on 127.0.0.1 (ssh forward of {h}) is in use; set "
                        "labvirt.forward_base_port to a free range")
    return result


def memory_check(lab: Lab, hv: Hypervisor, obs: Observed) -> None:
    """Refuse at once, with the numbers, a lab whose running nodes do not fit the host:
    the image-boot nodes (which up starts) and whatever else of the lab is running."""
    running = {d.name for d in obs.domains if d.running}
    need = sum(n.memory_kib * 1024 for n in lab.nodes
               if n.boot == "image" or n.domain in running)
    host = hv.host()
    if need > host.memory_bytes * 0.9:
        raise InputError(
            f"preflight failed: the lab needs {need / GB:.1f} GB of RAM, the host has "
            f"{host.memory_bytes / GB:.1f} GB",
            "try -f overrides/tiny.yml (256 MiB nodes); nothing was created")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class UpResult:
    plan: Plan
    report: ExecutionReport | None
    notes: list[str]
    readiness: list[Readiness] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.report is None or self.report.ok) and all(r.ready for r in self.readiness)


def compute_plan(session: Session, hv: Hypervisor, lab: Lab, recreate: tuple[str, ...] = (),
                 progress: Callable[[str], None] | None = None,
                 obs: Observed | None = None) -> tuple[Plan, Prepared]:
    obs = obs or hv.observe((lab.pool_name,))
    prepared = prepare(session, lab, hv, progress)
    routes = host_routes() if hv.host().is_local and not lab.uri.startswith("test:") else ()
    plan = make_plan(lab, obs, prepared.provision, recreate=recreate, host_routes=routes,
                     trusted_uploads=trusted_uploads(lab, obs), pool_paths=hv.all_pool_paths())
    return plan, prepared


def _raise_conflicts(plan: Plan) -> None:
    if plan.conflicts:
        raise InputError(
            "the lab collides with what the hypervisor already has:\n  - "
            + "\n  - ".join(plan.conflicts),
            "labvirt never changes objects that are not this lab's",
        )


def plan_only(session: Session, recreate: tuple[str, ...] = ()) -> Plan:
    lab = session.lab()
    with Hypervisor(lab.uri) as hv:
        plan, _ = compute_plan(session, hv, lab, recreate)
    return plan


def up(session: Session, *, recreate: tuple[str, ...] = (), dry_run: bool = False,
       workers: int = DEFAULT_WORKERS, progress: Callable[[Event], None] | None = None,
       note: Callable[[str], None] | None = None, hv: Hypervisor | None = None,
       on_plan: Callable[[Plan], None] | None = None, wait: bool = True,
       timeout: float | None = None) -> UpResult:
    """Converge the lab. `on_plan` sees the plan before anything changes (to set up a
    progress display); `progress` then sees every action start and finish."""
    lab = session.lab()
    with session.store.locked("up"):
        own = hv is None
        hv = hv or Hypervisor(lab.uri)
        try:
            obs = hv.observe((lab.pool_name,))
            memory_check(lab, hv, obs)  # before anything is built or uploaded
            plan, prepared = compute_plan(session, hv, lab, recreate, note, obs)
            _raise_conflicts(plan)
            checks = preflight(lab, hv, prepared, plan)
            if checks.problems:
                raise InputError("preflight failed:\n  - " + "\n  - ".join(checks.problems),
                                 "nothing was created")
            if dry_run or plan.empty:
                return UpResult(plan, None, checks.notes)
            if on_plan is not None:
                on_plan(plan)
            executor = Executor(hv, lab, prepared.payload, workers=workers, progress=progress)
            marks = console_marks(lab, hv, sorted({a.node for a in plan.actions
                                                   if a.kind == "start-domain" and a.node}))
            report = executor.run(plan)
            rebuilt = [h for h, r in report.nodes.items()
                       if any(d.startswith("remove-domain") for d in r.done)]
            if rebuilt:
                forget_in_snapshots(session, rebuilt)
            result = UpResult(plan, report, checks.notes)
            started = [lab.node(h) for h, r in report.nodes.items()
                       if r.ok and any(d.startswith("start-domain") for d in r.done)]
            if wait and started and prepared.access is not None:
                def tell(node: str, message: str) -> None:
                    # "ready" ends a node's wait; anything else is its boot stage so far
                    if progress is not None:
                        status = "done" if message == "ready" else "progress"
                        progress(Event(node, "wait-ssh", node, status, message))

                result.readiness = wait_ready(
                    lab, prepared.access, started, timeout=timeout, progress=tell,
                    console=lambda h: console_text(lab, hv, h, since=marks.get(h, 0)))
            return result
        finally:
            if own:
                hv.close()


def forget_in_snapshots(session: Session, nodes: list[str]) -> None:
    """Rebuilt nodes lost their snapshot layers: take them out of every record (a record
    left with no node goes), so no restore can land on a disk that is not its own."""
    state = session.load_state()
    changed = False
    for name, rec in list(state.snapshots.items()):
        for host in nodes:
            if host in rec.get("layers", {}):
                changed = True
                rec["layers"].pop(host, None)
                rec.get("stacks", {}).pop(host, None)
                rec["nodes"] = [h for h in rec.get("nodes", []) if h != host]
                rec["running"] = [h for h in rec.get("running", []) if h != host]
        if not rec.get("layers"):
            del state.snapshots[name]
    if changed:
        session.store.save(state)


@dataclass(frozen=True)
class NodeStatus:
    hostname: str
    domain: str
    state: str  # running, shut-off, missing, ...
    stack: str | None
    role: str | None
    ctlplane_ip: str | None
    ssh: str
    disk_allocation: int
    disk_capacity: int
    snapshots: tuple[str, ...]


def status(session: Session, hv: Hypervisor | None = None) -> list[NodeStatus]:
    from labvirt.outputs.access import endpoint

    state = session.load_state()
    lab = session.lab(state)
    own = hv is None
    hv = hv or Hypervisor(lab.uri)
    try:
        obs = hv.observe((lab.pool_name,))
    finally:
        if own:
            hv.close()
    pool = obs.pool(lab.pool_name)
    out = []
    for node in lab.nodes:
        dom = obs.domain(node.domain)
        if dom is None:
            st = "missing"
        elif not dom.ours(lab.name):
            st = "not-ours"
        else:
            st = dom.state
        alloc = sum(v.allocation for d in node.disks for v in (pool.volumes if pool else ())
                    if belongs_to(d, v.name))
        cap = sum(d.size_bytes for d in node.disks) if dom is not None else 0
        member = lab.stack_of(node.hostname)
        ep = endpoint(lab, node)
        snaps = tuple(name for name, rec in state.snapshots.items()
                      if node.hostname in rec.get("nodes", []))
        out.append(NodeStatus(node.hostname, node.domain, st, member[0] if member else None,
                              member[1] if member else None,
                              str(node.ctlplane_ip) if node.ctlplane_ip else None,
                              f"{ep.host}:{ep.port}", alloc, cap, snaps))
    return out


@dataclass
class DownResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def down(session: Session, hv: Hypervisor | None = None,
         progress: Callable[[str], None] | None = None,
         workers: int = DEFAULT_WORKERS) -> DownResult:
    """Remove exactly this lab: domains, volumes, pool, networks carrying its identity."""
    lab = session.lab()
    say = progress or (lambda _m: None)
    result = DownResult()
    with session.store.locked("down"):
        own = hv is None
        hv = hv or Hypervisor(lab.uri)
        try:
            obs = hv.observe((lab.pool_name,))
            doomed = [d.name for d in obs.domains if d.ours(lab.name)]

            def remove(name: str) -> str:
                say(f"removing domain {name}")
                hv.destroy_domain(name)
                hv.undefine_domain(name)
                return f"domain {name}"

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labvirt") as ex:
                result.removed.extend(ex.map(remove, doomed))
            pool = obs.pool(lab.pool_name)
            if pool is not None and pool.uuid == pool_uuid(lab):
                if not pool.active:
                    hv.ensure_pool(lab.pool_name, "")
                    pool = hv.observe((lab.pool_name,)).pool(lab.pool_name)
                assert pool is not None
                ours = (f"{lab.prefix}-", TINY_PREFIX, BASE_PREFIX)
                for vol in pool.volumes:
                    if vol.name.startswith(ours):
                        hv.delete_volume(lab.pool_name, vol.name)
                        result.removed.append(f"volume {vol.name}")
                    else:
                        result.kept.append(f"volume {vol.name} (not labvirt's)")
                say(f"removing pool {lab.pool_name}")
                if hv.remove_pool(lab.pool_name):
                    result.removed.append(f"pool {lab.pool_name}")
                else:
                    result.kept.append(f"pool {lab.pool_name} (holds files that are not labvirt's)")
            for net in obs.networks:
                if not net.ours(lab.name):
                    continue
                say(f"removing network {net.name}")
                hv.remove_network(net.name)
                result.removed.append(f"network {net.name}")
        finally:
            if own:
                hv.close()
        state = session.load_state()
        if state.snapshots:
            state.snapshots.clear()
            session.store.save(state)
    return result


CONSOLE_READ_BYTES = 256 * 1024  # enough for a whole distribution boot with kernel messages


def console_marks(lab: Lab, hv: Hypervisor, hostnames: list[str]) -> dict[str, int]:
    """Where each node's console log ends now: taken before nodes are (re)started, so a
    wait reads only what their new boot writes (the log is appended across boots)."""
    marks = {}
    for h in hostnames:
        try:
            marks[h] = hv.volume_size(lab.pool_name, console_log_name(lab.node(h)))
        except LabvirtError:
            marks[h] = 0
    return marks


def console_text(lab: Lab, hv: Hypervisor, hostname: str,
                 limit: int = CONSOLE_READ_BYTES, since: int = 0) -> str:
    """The end of a node's serial console log (after byte `since`), read through the
    storage API so it works for remote hypervisors too; empty when there is none yet."""
    node = lab.node(hostname)
    try:
        data = hv.download_volume(lab.pool_name, console_log_name(node), limit=limit,
                                  offset=since)
    except LabvirtError:
        return ""
    return data.decode(errors="replace")


def console_tail(lab: Lab, hv: Hypervisor, hostname: str, lines: int = 20) -> str:
    """The last lines of a node's serial console log."""
    text = console_text(lab, hv, hostname, limit=max(16384, lines * 200))
    if not text:
        return "(no console log)"
    text = text.replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])
