"""labvirt's command line: parse arguments, call one operation, render its result.

No business logic lives here. Every labvirt error is printed as a message with a hint
and no traceback; bad input exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from labvirt import __version__
from labvirt.errors import LabvirtError
from labvirt.model import Lab
from labvirt.ops import inventory as inventory_ops
from labvirt.ops import stacks as stack_ops
from labvirt.outputs.views import human_size, lab_to_dict
from labvirt.session import Session

FORMATS = click.Choice(["table", "json", "yaml"])
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
              help="Where labs keep their state (default ~/.local/state/labvirt).")
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
    out.print(f"lab [bold]{lab.name}[/] on {lab.uri}  (prefix {lab.prefix}, {lab.machine}, "
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
        table.add_row(node.hostname, node.domain, str(node.cpu), f"{node.memory_mib} MiB",
                      disks, nics, member[0] if member else "-", member[1] if member else "-",
                      str(node.ctlplane_ip))
    out.print(table)
    out.print()
    nets = Table(box=None, pad_edge=False)
    for col in ("network", "libvirt name", "bridge", "forward", "host address", "dhcp"):
        nets.add_column(col)
    for n in lab.networks:
        nets.add_row(n.name, n.libvirt_name, n.bridge, n.forward,
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
        table.add_row(s.name, s.role, nodes or "-")
    free = [n.hostname for n in lab.overcloud_nodes if lab.stack_of(n.hostname) is None]
    if free:
        table.add_row("(unassigned)", "-", ", ".join(free))
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
        out.print(f"{shown}  [dim]{w.what}[/]")


def main() -> None:
    try:
        cli.main(prog_name="labvirt", standalone_mode=True)
    except LabvirtError as exc:  # raised before a command runs (e.g. in the group callback)
        err.print(exc.render(), markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, not bad input
        if os.environ.get("LABVIRT_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc}\n  hint: this is a labvirt "
                  "bug; rerun with LABVIRT_DEBUG=1 for a traceback and report it", markup=False)
        sys.exit(70)
