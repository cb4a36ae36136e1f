"""labvirt's command line: parse arguments, call one operation, render its result.

No business logic lives here. Every labvirt error is printed as a message with a hint
and no traceback; bad input exits with status 2.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from labvirt import __version__
from labvirt.errors import InputError, LabvirtError
from labvirt.model import Lab
from labvirt.ops import inventory as inventory_ops
from labvirt.ops import stacks as stack_ops
from labvirt.outputs.views import human_size, lab_to_dict
from labvirt.session import Session

if TYPE_CHECKING:  # libvirt and paramiko load only for the commands that need them
    from labvirt.executor import Event
    from labvirt.ops.provision import UpResult
    from labvirt.plan import Plan

FORMATS = click.Choice(["table", "json", "yaml"])
TIMEOUT_HELP = ("Seconds to wait for each started node to be ready (ssh answers, cloud-init "
                "done). Default: 300 for the tiny image, 900 for other images (600 on KVM).")
# Not on a terminal (piped, captured in tests) tables keep full lines instead of 80 columns.
_WIDTH = None if sys.stdout.isatty() else 250
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class LabvirtGroup(click.Group):
    """Turns labvirt errors into messages and exit statuses, never tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabvirtError as exc:
            err.print(exc.render(), markup=False)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted; run the same command again to finish", markup=False)
            ctx.exit(130)


def _session(ctx: click.Context) -> Session:
    session: Session = ctx.obj
    return session


def _warn(session: Session) -> None:
    for warning in session.spec.warnings:
        err.print(f"warning: {warning}", markup=False)


def _dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


@click.group(cls=LabvirtGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "files", multiple=True, type=click.Path(path_type=Path),
              help="Layout (tripleo-lab overrides) file; repeat to layer, later wins. "
                   "Default: ./overrides.yml, else the embedded Glance DCN lab.")
@click.option("--state-dir", type=click.Path(path_type=Path), envvar="LABVIRT_STATE_DIR",
              help="Where labs keep their state (default $XDG_STATE_HOME/labvirt, "
                   "else ~/.local/state/labvirt).")
@click.version_option(__version__, prog_name="labvirt")
@click.pass_context
def cli(ctx: click.Context, files: tuple[Path, ...], state_dir: Path | None) -> None:
    """Build virtual TripleO/DCN labs on libvirt from tripleo-lab overrides files."""
    session = Session(list(files))
    if state_dir is not None:
        session.state_root = state_dir
    ctx.obj = session


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def show(ctx: click.Context, fmt: str) -> None:
    """Show the resolved lab: nodes, disks, NICs, networks and stacks."""
    session = _session(ctx)
    lab = session.lab()
    _warn(session)
    if fmt != "table":
        _dump(lab_to_dict(lab), fmt)
        return
    _show_table(lab)


def _show_table(lab: Lab) -> None:
    out.print(f"lab [bold]{escape(lab.name)}[/] on {escape(lab.uri)}  "
              f"(prefix {escape(lab.prefix)}, {lab.machine}, "
              f"{'UEFI' if lab.uefi else 'BIOS'}, domain type {lab.domain_type}, "
              f"access {lab.access})")
    out.print(f"layout: {', '.join(lab.sources)}", markup=False)
    table = Table(box=None, pad_edge=False)
    for col in ("node", "domain", "cpu", "memory", "disks", "nics", "stack", "role", "ctlplane"):
        table.add_column(col, no_wrap=True)
    for node in lab.nodes:
        member = lab.stack_of(node.hostname)
        root = node.disks[0]
        extra = len(node.disks) - 1
        disks = human_size(root.size_bytes) + (f" +{extra}" if extra else "")
        nics = " ".join(n.network for n in node.nics)
        table.add_row(escape(node.hostname), escape(node.domain), str(node.cpu),
                      f"{node.memory_mib} MiB", disks, escape(nics),
                      escape(member[0]) if member else "-", escape(member[1]) if member else "-",
                      str(node.ctlplane_ip))
    out.print(table)
    out.print()
    nets = Table(box=None, pad_edge=False)
    for col in ("network", "libvirt name", "bridge", "forward", "host address", "dhcp"):
        nets.add_column(col)
    for n in lab.networks:
        nets.add_row(escape(n.name), escape(n.libvirt_name), escape(n.bridge), n.forward,
                     str(n.address) if n.address else "-",
                     f"{n.dhcp_range[0]}-{n.dhcp_range[1]}" if n.dhcp_range else "-")
    out.print(nets)
    out.print()
    _stacks_table(lab)


def _stacks_table(lab: Lab) -> None:
    table = Table(box=None, pad_edge=False)
    for col in ("stack", "role", "nodes"):
        table.add_column(col)
    for s in lab.stacks:
        nodes = ", ".join(m.node if m.role == s.role else f"{m.node} ({m.role})"
                          for m in s.members)
        table.add_row(escape(s.name), escape(s.role), escape(nodes) or "-")
    free = [n.hostname for n in lab.overcloud_nodes if lab.stack_of(n.hostname) is None]
    if free:
        table.add_row("(unassigned)", "-", escape(", ".join(free)))
    out.print(table)


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--reset", is_flag=True, help="Forget assign/unassign changes; use the layout's.")
@click.pass_context
def stacks(ctx: click.Context, fmt: str, reset: bool) -> None:
    """List stacks, their roles and nodes."""
    session = _session(ctx)
    if reset:
        count = stack_ops.reset(session)
        err.print(f"forgot {count} assignment(s); the layout's stacks apply", markup=False)
    lab = session.lab()
    _warn(session)
    if fmt != "table":
        data = lab_to_dict(lab)
        unassigned = [n.hostname for n in lab.overcloud_nodes if lab.stack_of(n.hostname) is None]
        _dump({"stacks": data["stacks"], "unassigned": unassigned}, fmt)
        return
    _stacks_table(lab)


def _print_moves(moves: list[stack_ops.Move]) -> None:
    for m in moves:
        before = m.before or "(unassigned)"
        after = m.after or "(unassigned)"
        role = f" as {m.role}" if m.role else ""
        if before == after and not m.role:
            out.print(f"{m.node}: already in {after}", markup=False)
        else:
            out.print(f"{m.node}: {before} -> {after}{role}", markup=False)


@cli.command()
@click.argument("stack")
@click.argument("nodes", nargs=-1, required=True)
@click.option("--role", help="TripleO role for these nodes (default: the stack's role). "
                             "Required when the stack is new.")
@click.pass_context
def assign(ctx: click.Context, stack: str, nodes: tuple[str, ...], role: str | None) -> None:
    """Move NODES into STACK (creating it when --role is given)."""
    _print_moves(stack_ops.assign(_session(ctx), stack, nodes, role))


@cli.command()
@click.argument("nodes", nargs=-1, required=True)
@click.pass_context
def unassign(ctx: click.Context, nodes: tuple[str, ...]) -> None:
    """Take NODES out of their stacks."""
    _print_moves(stack_ops.unassign(_session(ctx), nodes))


@cli.command()
@click.option("--stack", help="Only this stack's files.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path),
              help="Where to write (default ./<lab>-inventory).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def inventory(ctx: click.Context, stack: str | None, output_dir: Path | None, fmt: str) -> None:
    """Write per-stack inventories, deployed-server environments and access files."""
    session = _session(ctx)
    written = inventory_ops.write_inventory(session, output_dir, stack)
    _warn(session)
    if fmt == "json":
        _dump([{"path": str(w.path), "what": w.what, "stack": w.stack} for w in written], "json")
        return
    cwd = Path.cwd()
    for w in written:
        try:
            shown = w.path.relative_to(cwd)
        except ValueError:
            shown = w.path
        out.print(f"{escape(str(shown))}  [dim]{escape(w.what)}[/]")


def _print_plan(plan: Plan) -> None:
    if plan.drift:
        for d in plan.drift:
            out.print(f"[yellow]drift[/] {escape(d.node)}: {escape('; '.join(d.changes))}")
        out.print("  apply with: labvirt up --recreate NODE... (rebuilds the node and its disks)")
    if plan.empty:
        out.print(f"lab {plan.lab}: nothing to do ({len(plan.unchanged)} nodes unchanged)",
                  markup=False)
        return
    for a in plan.actions:
        where = a.node or "lab"
        out.print(f"  {where:<18} {a.describe()}", markup=False)
    out.print(f"{len(plan.actions)} action(s); {len(plan.unchanged)} node(s) unchanged",
              markup=False)


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "lab": plan.lab,
        "actions": [{"kind": a.kind, "target": a.target, "node": a.node, "detail": a.detail}
                    for a in plan.actions],
        "drift": [{"node": d.node, "changes": list(d.changes)} for d in plan.drift],
        "unchanged": plan.unchanged,
    }


class _ProgressView:
    """A rich progress display: one line per node, advancing with each finished action,
    then with its ssh answering when `up` waits for it."""

    def __init__(self, plan: Plan, enabled: bool, wait: bool) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.fields[node]:<18}"), BarColumn(bar_width=20),
            TextColumn("{task.description}"), TimeElapsedColumn(),
            console=err, transient=False, disable=not enabled,
        )
        counts: dict[str | None, int] = {}
        for a in plan.actions:
            counts[a.node] = counts.get(a.node, 0) + 1 + (wait and a.kind == "start-domain")
        self.left = dict(counts)
        self.wait = wait
        self.tasks: dict[str | None, TaskID] = {
            node: self.progress.add_task("waiting", total=total, node=node or "lab")
            for node, total in counts.items()
        }

    def __call__(self, event: Event) -> None:
        task = self.tasks.get(event.node)
        if task is None:
            return
        if event.status == "start":
            self.progress.update(task, description=escape(f"{event.action} {event.target}"))
        elif event.status == "progress":  # a waiting node's boot stage or console line
            self.progress.update(task, description=escape(event.message))
        elif event.status == "failed":
            self.progress.update(task, description=f"[red]failed[/] {escape(event.action)}")
        else:
            self.left[event.node] -= 1
            if event.action == "start-domain" and self.wait:
                text = "waiting for ssh"
            elif self.left[event.node] <= 0:
                text = "ssh ready" if event.action == "wait-ssh" else "done"
            else:
                text = event.action
            self.progress.update(task, advance=1, description=text)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--recreate", "recreate", multiple=True, metavar="NODE",
              help="Rebuild NODE (domain and disks) to apply drift. Repeatable.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Nodes handled in parallel.")
@click.option("--no-wait", is_flag=True, help="Return once domains are started.")
@click.option("--timeout", type=click.FloatRange(1), default=None,
              help=TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def up(ctx: click.Context, dry_run: bool, recreate: tuple[str, ...], workers: int,
       no_wait: bool, timeout: float | None, fmt: str) -> None:
    """Create or converge the lab: networks, pool, disks, domains."""
    from labvirt.ops import provision as provision_ops

    session = _session(ctx)
    _warn(session)
    view: _ProgressView | None = None

    def progress(event: Event) -> None:
        if view is not None:
            view(event)

    def note(message: str) -> None:
        if fmt == "table":
            err.print(message, markup=False)

    def on_plan(plan: Plan) -> None:
        nonlocal view
        view = _ProgressView(plan, enabled=fmt == "table" and err.is_terminal,
                             wait=not no_wait)
        view.progress.start()

    try:
        result = provision_ops.up(session, recreate=tuple(recreate), dry_run=dry_run,
                                  workers=workers, progress=progress, note=note,
                                  on_plan=on_plan, wait=not no_wait, timeout=timeout)
    finally:
        if view is not None:
            view.progress.stop()
    for n in result.notes:
        note(f"note: {n}")
    if result.report is None:
        if fmt == "json":
            _dump({"plan": _plan_json(result.plan), "nodes": {}}, "json")
        else:
            _print_plan(result.plan)
        return
    _render_report(result, fmt)
    if not result.ok:
        ctx.exit(1)


def _render_report(result: UpResult, fmt: str) -> None:
    plan, report = result.plan, result.report
    if report is None:
        _print_plan(plan)
        return
    ready = {r.node: r for r in result.readiness}
    if fmt == "json":
        _dump({
            "plan": _plan_json(plan),
            "shared": report.shared,
            "shared_error": report.shared_error,
            "seconds": round(report.seconds, 3),
            "nodes": {h: {"result": r.summary, "done": r.done, "error": r.error,
                          "seconds": round(r.seconds, 3),
                          "ssh_ready": ready[h].ready if h in ready else None,
                          "ready_seconds": round(ready[h].seconds, 3) if h in ready else None,
                          "ready_error": (ready[h].message or None) if h in ready else None,
                          "ready_state": ready[h].state if h in ready else None}
                      for h, r in report.nodes.items()},
        }, "json")
        return
    for d in plan.drift:
        out.print(f"[yellow]drift[/] {escape(d.node)}: {escape('; '.join(d.changes))} "
                  "(apply with --recreate NODE)")
    if report.shared_error:
        out.print(f"[red]failed[/]: {escape(report.shared_error)}")
    table = Table(box=None, pad_edge=False)
    for col in ("node", "result", "actions", "seconds", "ssh ready", "error"):
        table.add_column(col)
    for h, r in report.nodes.items():
        colour = "red" if r.error else ("dim" if not r.done else "green")
        rd = ready.get(h)
        ready_text = "-" if rd is None else (f"{rd.seconds:.1f} s" if rd.ready
                                             else "[red]no[/]")
        table.add_row(escape(h), f"[{colour}]{escape(r.summary)}[/]", str(len(r.done)),
                      f"{r.seconds:.1f}",
                      ready_text, escape(r.error or ""))
    out.print(table)
    for rd in result.readiness:
        if not rd.ready:
            out.print(f"[red]{escape(rd.node)}[/]: {escape(rd.message)}")
    not_ready = {rd.node for rd in result.readiness if not rd.ready}
    failed = {h for h, r in report.nodes.items() if not r.ok} | not_ready
    changed = {h for h, r in report.nodes.items() if r.done} - failed
    unchanged = len(report.nodes) - len(changed) - len(failed)
    ready = [rd for rd in result.readiness if rd.ready]
    slowest = f"; ssh-ready within {max(rd.seconds for rd in ready):.1f} s" if ready else ""
    out.print(f"{len(report.nodes)} nodes: {len(changed)} changed, {len(failed)} failed, "
              f"{unchanged} unchanged; {report.seconds:.1f} s{slowest}", markup=False)


@cli.command()
@click.option("--recreate", "recreate", multiple=True, metavar="NODE")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def plan(ctx: click.Context, recreate: tuple[str, ...], fmt: str) -> None:
    """Show what `up` would do, changing nothing."""
    from labvirt.ops import provision as provision_ops

    session = _session(ctx)
    _warn(session)
    p = provision_ops.plan_only(session, tuple(recreate))
    if p.conflicts:
        for c in p.conflicts:
            err.print(f"conflict: {c}", markup=False)
    if fmt == "json":
        _dump({**_plan_json(p), "conflicts": p.conflicts}, "json")
    else:
        _print_plan(p)
    if p.conflicts:
        ctx.exit(2)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """Each node's state, stack, role, address, disk use and snapshots."""
    from labvirt.ops import provision as provision_ops

    session = _session(ctx)
    rows = provision_ops.status(session)
    if fmt == "json":
        _dump([{
            "node": r.hostname, "domain": r.domain, "state": r.state, "stack": r.stack,
            "role": r.role, "ctlplane_ip": r.ctlplane_ip, "ssh": r.ssh,
            "disk_allocation": r.disk_allocation, "disk_capacity": r.disk_capacity,
            "snapshots": list(r.snapshots),
        } for r in rows], "json")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("node", "state", "stack", "role", "ctlplane", "ssh", "disk used", "snapshots"):
        table.add_column(col, no_wrap=True)
    colours = {"running": "green", "shut-off": "yellow", "missing": "dim", "not-ours": "red"}
    for r in rows:
        c = colours.get(r.state, "white")
        table.add_row(escape(r.hostname), f"[{c}]{escape(r.state)}[/]", escape(r.stack or "-"),
                      escape(r.role or "-"), escape(r.ctlplane_ip or "-"), escape(r.ssh),
                      f"{human_size(r.disk_allocation)} / {human_size(r.disk_capacity)}"
                      if r.disk_capacity else "-",
                      escape(", ".join(r.snapshots) or "-"))
    out.print(table)


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def down(ctx: click.Context, yes: bool) -> None:
    """Remove the lab: its domains (with snapshots and nvram), volumes, pool, networks."""
    from labvirt.ops import provision as provision_ops

    session = _session(ctx)
    lab = session.lab()
    if not yes:
        if not sys.stdin.isatty():
            raise InputError("labvirt down removes the whole lab and needs confirmation",
                             "run it in a terminal, or pass --yes")
        click.confirm(f"Remove lab {lab.name} ({len(lab.nodes)} domains, their disks and "
                      "networks)?", abort=True, err=True)
    result = provision_ops.down(session, progress=lambda m: err.print(m, markup=False)
                                if err.is_terminal else None)
    for k in result.kept:
        err.print(f"kept {k}", markup=False)
    out.print(f"lab {lab.name}: removed {len(result.removed)} object(s)", markup=False)


def _command_after_dashes(args: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Click swallows `--`; find the command after it in the process arguments."""
    argv = sys.argv
    if "--" not in argv:
        return args, ""
    command = argv[argv.index("--") + 1:]
    names = args[: len(args) - len(command)] if command else args
    return tuple(names), shlex.join(command) if len(command) > 1 else (command[0] if command
                                                                        else "")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, node: str, command: tuple[str, ...]) -> None:
    """Log in to NODE, or run `-- COMMAND` there (host key checked)."""
    from labvirt.ops import guests

    session = _session(ctx)
    lab = session.lab()
    target_node = lab.node(node)
    access = guests.lab_access(session, lab)
    target = access.target(lab, target_node)
    if command:
        outcome = guests.exec_on(session, (node,), None, shlex.join(command)
                                 if len(command) > 1 else command[0])[0]
        if outcome.result is None:
            raise LabvirtError(outcome.error or "ssh failed")
        sys.stdout.write(outcome.result.stdout)
        sys.stderr.write(outcome.result.stderr)
        ctx.exit(outcome.result.exit_status)
    ssh_bin = shutil.which("ssh")
    if ssh_bin is None:
        raise InputError("an interactive login needs the ssh client",
                         "apt-get install openssh-client, or give a command after --")
    os.execv(ssh_bin, [
        "ssh", "-i", str(target.key_path), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={access.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", f"HostKeyAlias={node}", "-p", str(target.port), f"{target.user}@{target.host}",
    ])


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("--stack", help="Run on this stack's nodes.")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, stack: str | None, workers: int, fmt: str,
          args: tuple[str, ...]) -> None:
    """Run `-- COMMAND` on NODES (or a stack, or every node) in parallel."""
    from labvirt.ops import guests

    nodes, command = _command_after_dashes(args)
    if not command:
        raise InputError("give the command after --", "labvirt exec --stack dcn0 -- uptime")
    outcomes = guests.exec_on(_session(ctx), nodes, stack, command, workers)
    if fmt == "json":
        _dump([{"node": o.node, "exit_status": o.result.exit_status if o.result else None,
                "stdout": o.result.stdout if o.result else "",
                "stderr": o.result.stderr if o.result else "",
                "seconds": round(o.result.seconds, 3) if o.result else None,
                "error": o.error} for o in outcomes], "json")
    else:
        for o in outcomes:
            if o.result is None:
                out.print(f"[red]== {escape(o.node)}: {escape(o.error or '')}[/]")
                continue
            colour = "green" if o.ok else "red"
            out.print(f"[{colour}]== {escape(o.node)}: exit {o.result.exit_status}[/] "
                      f"({o.result.seconds:.1f} s)")
            if o.result.stdout:
                out.print(o.result.stdout.rstrip("\n"), markup=False)
            if o.result.stderr:
                err.print(o.result.stderr.rstrip("\n"), markup=False)
        bad = [o.node for o in outcomes if not o.ok]
        out.print(f"{len(outcomes) - len(bad)} ok, {len(bad)} failed"
                  + (f": {', '.join(bad)}" if bad else ""), markup=False)
    if any(not o.ok for o in outcomes):
        ctx.exit(1)


@cli.command()
@click.argument("node")
@click.option("-n", "--lines", type=click.IntRange(1, 10000), default=40, show_default=True)
@click.pass_context
def console(ctx: click.Context, node: str, lines: int) -> None:
    """Print the tail of NODE's serial console log (boot messages, kernel panics)."""
    from labvirt.ops.provision import console_tail
    from labvirt.virt import Hypervisor

    lab = _session(ctx).lab()
    lab.node(node)  # a clear error for an unknown name
    with Hypervisor(lab.uri) as hv:
        click.echo(console_tail(lab, hv, node, lines))


@cli.group()
def snapshot() -> None:
    """Lab snapshots: the whole lab, one stack, or chosen nodes."""


def _snapshot_report(report: Any, fmt: str) -> None:
    if fmt == "json":
        _dump({
            "name": report.name, "action": report.action, "ok": report.ok,
            "seconds": round(report.seconds, 3), "collected": report.collected,
            "nodes": {h: {"steps": o.steps, "error": o.error, "seconds": round(o.seconds, 3),
                          "ready_seconds": None if o.ready_seconds is None
                          else round(o.ready_seconds, 3)}
                      for h, o in report.nodes.items()},
        }, "json")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("node", "result", "seconds", "ssh ready", "steps / error"):
        table.add_column(col)
    for h, o in report.nodes.items():
        ready = "-" if o.ready_seconds is None else f"{o.ready_seconds:.1f} s"
        table.add_row(escape(h), "[green]ok[/]" if o.ok else "[red]failed[/]", f"{o.seconds:.1f}",
                      ready, escape(o.error or ", ".join(o.steps)))
    out.print(table)
    bad = [h for h, o in report.nodes.items() if not o.ok]
    out.print(f"snapshot {report.name}: {report.action} on {len(report.nodes)} node(s) in "
              f"{report.seconds:.1f} s" + (f"; failed: {', '.join(bad)}" if bad else ""),
              markup=False)


def _snap_progress(fmt: str) -> Any:
    if fmt != "table" or not err.is_terminal:
        return None
    return lambda node, message: err.print(f"  {node:<18} {message}", markup=False)


@snapshot.command("create")
@click.argument("name")
@click.argument("nodes", nargs=-1)
@click.option("--stack", help="Only this stack's nodes.")
@click.option("--description", default="", help="A note kept with the snapshot.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=60, show_default=True,
              help="Seconds to wait for a graceful shutdown before forcing the node off.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--no-wait", is_flag=True, help="Do not wait for restarted nodes' ssh.")
@click.option("--timeout", type=click.FloatRange(1), default=None, help=TIMEOUT_HELP)
@click.option("--live", is_flag=True,
              help="Internal snapshot of disks and memory of running BIOS nodes, restored "
                   "without a reboot (not for UEFI nodes).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def snapshot_create(ctx: click.Context, name: str, nodes: tuple[str, ...], stack: str | None,
                    description: str, shutdown_timeout: float, workers: int, no_wait: bool,
                    timeout: float | None, live: bool, fmt: str) -> None:
    """Snapshot the lab (or a stack, or NODES) as NAME."""
    from labvirt.ops import snapshot as snap

    report = snap.create(_session(ctx), name, stack=stack, nodes=nodes,
                         description=description, workers=workers,
                         shutdown_timeout=shutdown_timeout, wait=not no_wait,
                         timeout=timeout, progress=_snap_progress(fmt), live=live)
    _snapshot_report(report, fmt)
    if not report.ok:
        ctx.exit(1)


@snapshot.command("restore")
@click.argument("name")
@click.argument("nodes", nargs=-1)
@click.option("--stack", help="Only this stack's nodes.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before resetting running nodes.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--no-wait", is_flag=True, help="Do not wait for the nodes' ssh.")
@click.option("--timeout", type=click.FloatRange(1), default=None, help=TIMEOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def snapshot_restore(ctx: click.Context, name: str, nodes: tuple[str, ...], stack: str | None,
                     yes: bool, workers: int, no_wait: bool, timeout: float | None,
                     fmt: str) -> None:
    """Put the lab (or a stack, or NODES) back to snapshot NAME."""
    from labvirt.ops import snapshot as snap

    def confirm(running: list[str]) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(
                f"restoring resets {len(running)} running node(s) and needs confirmation",
                "run it in a terminal, or pass --yes")
        return click.confirm(f"Reset {len(running)} running node(s) ({', '.join(running)}) "
                             f"to snapshot {name}?", err=True)

    report = snap.restore(_session(ctx), name, stack=stack, nodes=nodes, workers=workers,
                          wait=not no_wait, timeout=timeout, progress=_snap_progress(fmt),
                          confirm=confirm)
    _snapshot_report(report, fmt)
    if not report.ok:
        ctx.exit(1)


@snapshot.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def snapshot_list(ctx: click.Context, fmt: str) -> None:
    """List the lab's snapshots."""
    from labvirt.ops import snapshot as snap

    rows = snap.listing(_session(ctx))
    if fmt == "json":
        _dump(rows, "json")
        return
    if not rows:
        out.print("no snapshots", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "created", "nodes", "description"):
        table.add_column(col)
    for r in rows:
        nodes = f"{len(r['nodes'])}"
        if r["incomplete"]:
            nodes += f" (incomplete: {', '.join(r['incomplete'])})"
        table.add_row(escape(r["name"]), escape(r["kind"]), escape(r["created"] or "-"),
                      escape(nodes),
                      escape(r["description"] or ""))
    out.print(table)


@snapshot.command("delete")
@click.argument("name")
@click.pass_context
def snapshot_delete(ctx: click.Context, name: str) -> None:
    """Delete snapshot NAME (layers other snapshots build on are kept)."""
    from labvirt.ops import snapshot as snap

    freed = snap.delete(_session(ctx), name)
    out.print(f"deleted snapshot {name}; freed {len(freed)} layer volume(s)", markup=False)


@cli.group()
def image() -> None:
    """Build, fetch and list images for lab nodes."""


@image.command("fetch")
@click.argument("ref", metavar="NAME|URL")
@click.option("--name", help="Name in the cache (default: the known name, or the URL's file).")
@click.option("--checksum-url", help="The publisher's checksum file (SHA256SUM, CHECKSUM).")
@click.option("--sha256", help="The image's SHA-256, when there is no checksum file.")
@click.option("--no-verify", is_flag=True, help="Keep the image without any checksum.")
@click.option("--force", is_flag=True, help="Download again even when fetched.")
def image_fetch(ref: str, name: str | None, checksum_url: str | None, sha256: str | None,
                no_verify: bool, force: bool) -> None:
    """Download a cloud image into the cache, verified; then `labvirt.image: NAME` uses it.

    Known names: centos-stream-9, centos-stream-10. RHEL: give the image URL with --sha256.
    An interrupted download resumes when the same command runs again."""
    from rich.progress import DownloadColumn, TimeRemainingColumn, TransferSpeedColumn

    from labvirt.image.fetch import fetch_image
    from labvirt.ops.provision import cache_dir

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(escape(name or ref.rsplit("/", 1)[-1]), total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        img, new = fetch_image(ref, cache_dir(), name=name, checksum_url=checksum_url,
                               sha256=sha256, no_verify=no_verify, force=force,
                               progress=progress, say=lambda m: err.print(m, markup=False))
    check = f"sha256 {img.sha256}" + ("" if img.verified else " (not verified)")
    out.print(f"{'fetched' if new else 'already fetched'} {img.name}: {img.format}, "
              f"{human_size(img.size)}, {check}\n  {img.path}\n"
              f"  use it with `labvirt: {{image: {img.name}}}` in a layout", markup=False)


@image.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def image_list(fmt: str) -> None:
    """The fetched images, and the names that can be fetched."""
    from labvirt.image.fetch import KNOWN_IMAGES, list_images
    from labvirt.ops.provision import cache_dir

    images = list_images(cache_dir())
    if fmt == "json":
        _dump({"images": [i.to_dict() for i in images],
               "known": {k.name: {"url": k.url, "checksum_url": k.checksum_url,
                                  "description": k.description}
                         for k in KNOWN_IMAGES.values()}}, "json")
        return
    table = Table("name", "format", "size", "verified", "source")
    for i in images:
        table.add_row(escape(i.name), escape(i.format), human_size(i.size),
                      "yes" if i.verified else "NO",
                      escape(i.url))
    out.print(table)
    fetched = {i.name for i in images}
    rest = [k for k in KNOWN_IMAGES if k not in fetched]
    if rest:
        out.print(f"can be fetched: {', '.join(rest)} (labvirt image fetch NAME)", markup=False)


@image.command("rm")
@click.argument("name")
def image_rm(name: str) -> None:
    """Remove a fetched image (and any partial download of it) from the cache."""
    from labvirt.image.fetch import remove_image
    from labvirt.ops.provision import cache_dir

    removed = remove_image(cache_dir(), name)
    out.print(f"removed {name} ({len(removed)} file(s))", markup=False)


@image.command("tiny")
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def image_tiny(force: bool, fmt: str) -> None:
    """Build the tiny rehearsal image (kernel + initramfs) from Debian packages."""
    from labvirt.image.tiny import build_tiny_image
    from labvirt.ops.provision import cache_dir

    def progress(message: str) -> None:
        if fmt == "table":
            err.print(message, markup=False)

    img = build_tiny_image(cache_dir(), progress=progress, force=force)
    info = {"version": img.version, "kernel": str(img.kernel), "initrd": str(img.initrd),
            "cmdline": img.cmdline, "kernel_bytes": img.kernel.stat().st_size,
            "initrd_bytes": img.initrd.stat().st_size}
    if fmt == "json":
        _dump(info, "json")
    else:
        out.print(f"tiny image {img.version}: kernel {human_size(info['kernel_bytes'])}, "
                  f"initrd {human_size(info['initrd_bytes'])}\n  {img.kernel}\n  {img.initrd}",
                  markup=False)


def main() -> None:
    try:
        cli.main(prog_name="labvirt", standalone_mode=True)
    except LabvirtError as exc:  # raised before a command runs (e.g. in the group callback)
        err.print(exc.render(), markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("LABVIRT_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc}\n  hint: this is a labvirt "
                  "bug; rerun with LABVIRT_DEBUG=1 for a traceback and report it", markup=False)
        sys.exit(70)
