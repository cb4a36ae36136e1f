"""Moving nodes between stacks. The change lives in the lab's state, never in the layout."""

from __future__ import annotations

from dataclasses import dataclass

from labvirt.errors import InputError
from labvirt.layout.spec import ROLE_RE, stack_name_problem
from labvirt.model import Assignment, Lab, resolve_stacks
from labvirt.session import Session
from labvirt.state import LabState


@dataclass(frozen=True)
class Move:
    node: str
    before: str | None  # stack before the change
    after: str | None
    role: str | None


def _check_nodes(lab: Lab, nodes: tuple[str, ...]) -> None:
    if not nodes:
        raise InputError("name at least one node", "for example: labvirt assign dcn0 oc0-ceph-4")
    for host in nodes:
        node = lab.node(host)  # raises with a did-you-mean
        if node.is_undercloud:
            raise InputError(f"{host!r} is the undercloud; it cannot join a stack",
                             "the undercloud deploys the stacks; name overcloud nodes only")


def _normalise(session: Session, state: LabState) -> None:
    """Drop assignments that say what the layout already says, so state stays minimal."""
    base = {m.node: (s.name, m.role) for s in resolve_stacks(
        session.spec, [n.hostname for n in session.lab(LabState()).overcloud_nodes],
        state.stacks) for m in s.members}
    for host, a in list(state.assignments.items()):
        if a.stack is None:
            redundant = host not in base  # unassigned, as the layout already has it
        else:  # in the stack (and role) the layout already gives it
            redundant = host in base and base[host][0] == a.stack and (
                a.role is None or a.role == base[host][1])
        if redundant:
            del state.assignments[host]
    used = {a.stack for a in state.assignments.values()}
    layout_stacks = {s.name for s in session.spec.labvirt.stacks}
    for name in list(state.stacks):
        if name not in used and name not in layout_stacks:
            del state.stacks[name]


def assign(session: Session, stack: str, nodes: tuple[str, ...], role: str | None) -> list[Move]:
    with session.store.locked("assign"):
        state = session.load_state()
        lab = session.lab(state)
        _check_nodes(lab, nodes)
        if role is not None and not ROLE_RE.match(role):
            raise InputError(f"{role!r} is not a valid role name",
                             "TripleO role names look like Compute, CephAll, DistributedComputeHCI")
        known = {s.name for s in lab.stacks}
        # stacks and roles are both Ansible groups in the inventories: no name may be both
        roles = {s.role for s in lab.stacks} | {m.role for s in lab.stacks for m in s.members}
        if role is not None and role in known:
            raise InputError(f"{role!r} cannot be a role name: it is the name of a stack",
                             "TripleO role names look like Compute, CephAll, DistributedComputeHCI")
        if stack not in known:
            problem = stack_name_problem(stack)
            if problem is not None:
                raise InputError(*problem)
            if stack in roles or stack == role:
                raise InputError(f"{stack!r} cannot be a stack name: it is the name of a role; "
                                 "in the inventories both are Ansible groups",
                                 "name stacks in lower case, like central-compute")
            if role is None:
                raise InputError(
                    f"stack {stack!r} does not exist yet; give its role to create it",
                    f"labvirt assign {stack} {' '.join(nodes)} --role Compute "
                    f"(stacks now: {', '.join(sorted(known)) or 'none'})",
                )
            state.stacks[stack] = role
        moves = []
        for host in dict.fromkeys(nodes):
            before = lab.stack_of(host)
            state.assignments[host] = Assignment(stack, role)
            moves.append(Move(host, before[0] if before else None, stack, role))
        _normalise(session, state)
        session.store.save(state)
        return moves


def unassign(session: Session, nodes: tuple[str, ...]) -> list[Move]:
    with session.store.locked("unassign"):
        state = session.load_state()
        lab = session.lab(state)
        _check_nodes(lab, nodes)
        moves = []
        for host in dict.fromkeys(nodes):
            before = lab.stack_of(host)
            state.assignments[host] = Assignment(None)
            moves.append(Move(host, before[0] if before else None, None, None))
        _normalise(session, state)
        session.store.save(state)
        return moves


def reset(session: Session) -> int:
    """Forget every assignment made with assign/unassign; the layout's stacks apply again."""
    with session.store.locked("stacks reset"):
        state = session.load_state()
        count = len(state.assignments)
        state.assignments.clear()
        state.stacks.clear()
        session.store.save(state)
        return count
