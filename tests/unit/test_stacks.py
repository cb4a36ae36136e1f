"""Stack assignment through the real CLI: assign, unassign, stacks --reset, and the state
file they keep (never the layout)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import yaml
from clitools import REPO, invoke, labvirt

from labvirt.ops import stacks as stack_ops
from labvirt.session import Session
from labvirt.state import StateStore

pytestmark = pytest.mark.unit

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    path = tmp_path / "glance-dcn.yml"
    shutil.copyfile(REPO / "overrides" / "glance-dcn.yml", path)
    return path


@pytest.fixture
def run(tmp_path: Path, layout: Path, state_dir: Path) -> Run:
    """labvirt, one process per command, on a private copy of the default layout with a
    private state root: what one command changes, the next process must see."""
    def run(*args: str, check: int | None = 0) -> CompletedProcess[str]:
        return labvirt("-f", layout.name, "--state-dir", state_dir, *args, cwd=tmp_path,
                       check=check)
    return run


@pytest.fixture
def inproc(layout: Path, state_dir: Path) -> Run:
    """The same, in-process (fast), for the many small cases."""
    def run(*args: str, check: int | None = 0) -> CompletedProcess[str]:
        return invoke("-f", layout, "--state-dir", state_dir, *args, check=check)
    return run


def stacks_json(run: Run) -> dict[str, list[str] | dict[str, list[str]]]:
    data = json.loads(run("stacks", "--format", "json").stdout)
    out: dict[str, object] = {s["name"]: [n["node"] for n in s["nodes"]] for s in data["stacks"]}
    out["(unassigned)"] = data["unassigned"]
    return out  # type: ignore[return-value]


def state_json(state_dir: Path) -> dict:
    return json.loads((state_dir / "glance-dcn" / "state.json").read_text())


def assert_in_one_stack_at_most(stacks: dict) -> None:
    seen = [n for nodes in stacks.values() for n in nodes]
    assert len(seen) == len(set(seen)), stacks


def test_assign_to_the_current_stack_is_a_no_op(run: Run, state_dir: Path) -> None:
    assert run("assign", "central-compute", "oc0-ceph-3").stdout == (
        "oc0-ceph-3: already in central-compute\n")
    assert state_json(state_dir)["assignments"] == {}  # nothing the layout does not say


def test_assign_moves_a_node_and_every_command_sees_it(
        run: Run, tmp_path: Path, state_dir: Path) -> None:
    assert run("assign", "central-compute", "oc0-ceph-4").stdout == (
        "oc0-ceph-4: dcn0 -> central-compute\n")
    stacks = stacks_json(run)
    assert stacks["central-compute"] == ["oc0-ceph-3", "oc0-ceph-4"]
    assert stacks["dcn0"] == []
    assert_in_one_stack_at_most(stacks)

    show = json.loads(run("show", "--format", "json").stdout)
    node = next(n for n in show["nodes"] if n["hostname"] == "oc0-ceph-4")
    assert (node["stack"], node["role"]) == ("central-compute", "Compute")

    out = tmp_path / "inv"
    run("inventory", "-o", str(out))
    central = yaml.safe_load((out / "central-compute" / "overcloud-deploy" / "central-compute"
                              / "tripleo-ansible-inventory.yaml").read_text())
    assert list(central["central-compute_Compute"]["hosts"]) == ["oc0-ceph-3", "oc0-ceph-4"]
    env = yaml.safe_load((out / "central-compute" / "deployed-server-environment.yaml")
                         .read_text())["parameter_defaults"]
    assert env["ComputeCount"] == 2
    assert env["HostnameMap"] == {"central-compute-novacompute-0": "oc0-ceph-3",
                                  "central-compute-novacompute-1": "oc0-ceph-4"}
    assert not (out / "dcn0").exists()  # an empty stack has nothing to deploy
    merged = yaml.safe_load((out / "inventory.yaml").read_text())
    assert "dcn0" not in merged["Undercloud"]["vars"]["plans"]
    assert "dcn0_DistributedComputeHCI" not in merged
    assert list(merged["DistributedComputeHCI"]["children"]) == ["dcn1_DistributedComputeHCI"]


def test_a_new_stack_needs_a_role(inproc: Run) -> None:
    proc = inproc("assign", "newstack", "oc0-ceph-5", check=2)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: stack 'newstack' does not exist yet")
    assert "hint: labvirt assign newstack oc0-ceph-5 --role Compute" in proc.stderr
    assert stacks_json(inproc)["dcn1"] == ["oc0-ceph-5"]  # nothing changed

    assert inproc("assign", "newstack", "oc0-ceph-5", "--role", "Compute").stdout == (
        "oc0-ceph-5: dcn1 -> newstack as Compute\n")
    data = json.loads(inproc("stacks", "--format", "json").stdout)
    assert data["stacks"][-1] == {"name": "newstack", "role": "Compute",
                                  "nodes": [{"node": "oc0-ceph-5", "role": "Compute"}]}
    assert next(s for s in data["stacks"] if s["name"] == "dcn1")["nodes"] == []


def test_role_for_one_node_of_an_existing_stack(inproc: Run) -> None:
    inproc("assign", "central-compute", "oc0-ceph-4", "--role", "ComputeHCI")
    data = json.loads(inproc("stacks", "--format", "json").stdout)
    central = next(s for s in data["stacks"] if s["name"] == "central-compute")
    assert central == {"name": "central-compute", "role": "Compute", "nodes": [
        {"node": "oc0-ceph-3", "role": "Compute"}, {"node": "oc0-ceph-4", "role": "ComputeHCI"}]}


def test_unassign_and_reset(inproc: Run, state_dir: Path) -> None:
    assert inproc("unassign", "oc0-ceph-5", "oc0-ceph-4").stdout == (
        "oc0-ceph-5: dcn1 -> (unassigned)\noc0-ceph-4: dcn0 -> (unassigned)\n")
    stacks = stacks_json(inproc)
    assert stacks["(unassigned)"] == ["oc0-ceph-4", "oc0-ceph-5"]
    assert stacks["dcn0"] == stacks["dcn1"] == []
    assert "(unassigned)" in inproc("stacks").stdout

    proc = inproc("stacks", "--reset", "--format", "json")
    assert proc.stderr == "forgot 2 assignment(s); the layout's stacks apply\n"
    assert json.loads(proc.stdout)["unassigned"] == []
    assert state_json(state_dir) == {"version": 1, "stacks": {}, "assignments": {},
                                     "snapshots": {}}
    stacks = stacks_json(inproc)
    assert (stacks["dcn0"], stacks["dcn1"]) == (["oc0-ceph-4"], ["oc0-ceph-5"])


def test_unknown_node_exits_2_with_did_you_mean(run: Run) -> None:
    proc = run("assign", "dcn0", "oc0-cehp-4", check=2)
    assert proc.stderr == "error: unknown node 'oc0-cehp-4'\n  hint: did you mean 'oc0-ceph-4'?\n"
    assert proc.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (("assign", "dcn0", "oc0-cehp-4"), "error: unknown node 'oc0-cehp-4'\n"
                                       "  hint: did you mean 'oc0-ceph-4'?\n"),
    (("unassign", "oc0-ceph-44"), "error: unknown node 'oc0-ceph-44'\n"
                                  "  hint: did you mean 'oc0-ceph-4'?\n"),
    (("assign", "dcn0", "undercloud"), "error: 'undercloud' is the undercloud; it cannot join "
                                       "a stack\n  hint: the undercloud deploys the stacks; "
                                       "name overcloud nodes only\n"),
    (("assign", "dcn 2", "oc0-ceph-5", "--role", "Compute"), "error: 'dcn 2' is not a valid "
                                                                "stack name"),
        # `labvirt inventory` writes hosts and edpm/ beside the stacks' directories
        (("assign", "hosts", "oc0-ceph-5", "--role", "Compute"), "error: 'hosts' cannot be a "
                                                                 "stack name: `labvirt inventory`"),
        (("assign", "../../escaped", "oc0-ceph-5", "--role", "Compute"),
         "error: '../../escaped' is not a valid stack name"),
    (("assign", "all", "oc0-ceph-5", "--role", "Compute"), "error: 'all' cannot be a stack"),
    (("assign", "dcn2", "oc0-ceph-5", "--role", "compute"), "error: 'compute' is not a valid "
                                                            "role name"),
    (("assign", "dcn2", "oc0-ceph-5", "--role", "Compute\n"), "error: 'Compute\\n' is not"),
    # a stack and a role are both Ansible groups in the inventories
    (("assign", "CephAll", "oc0-ceph-5", "--role", "Compute"), "error: 'CephAll' cannot be a "
                                                              "stack name"),
    (("assign", "Edge", "oc0-ceph-5", "--role", "Edge"), "error: 'Edge' cannot be a stack name"),
])
def test_bad_requests_exit_2_and_change_nothing(
        inproc: Run, state_dir: Path, args: tuple[str, ...], message: str) -> None:
    proc = inproc(*args, check=2)
    assert proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr
    state = state_dir / "glance-dcn" / "state.json"
    assert not state.exists() or state_json(state_dir)["assignments"] == {}


def test_a_role_cannot_take_a_stacks_name(tmp_path: Path, state_dir: Path) -> None:
    layout = tmp_path / "edge.yml"
    layout.write_text("vms: [{name: undercloud}, {name: ceph-0}, {name: ceph-1}]\n"
                      "labvirt: {stacks: [{name: Edge, role: Compute, nodes: [oc0-ceph-0]}]}\n")
    proc = invoke("-f", layout, "--state-dir", state_dir, "assign", "edge2", "oc0-ceph-1",
                  "--role", "Edge", check=2)
    assert proc.stderr.startswith("error: 'Edge' cannot be a role name: it is the name of a stack")
    assert not (state_dir / "lab" / "state.json").exists()


def test_a_node_is_never_in_two_stacks(layout: Path, state_dir: Path) -> None:
    """Many moves in a row (in-process: the CLI is only a thin shell over these)."""
    session = Session([layout], state_dir)
    moves = [("dcn0", "oc0-ceph-5", None), ("dcn1", "oc0-ceph-4", None),
             ("extra", "oc0-ceph-4", "Compute"), ("central-ceph", "oc0-ceph-4", None),
             ("dcn0", "oc0-controller-0", "DistributedComputeHCI"), ("dcn1", "oc0-ceph-5", None),
             ("extra", "oc0-ceph-0", "Compute")]
    for stack, node, role in moves:
        stack_ops.assign(Session([layout], state_dir), stack, (node,), role)
        lab = Session([layout], state_dir).lab()
        members = [m for s in lab.stacks for m in s.nodes]
        assert len(members) == len(set(members))
        assert lab.stack_of(node)[0] == stack
    assert session.lab().stack("extra").nodes == ("oc0-ceph-0",)


def test_state_is_json_written_atomically(inproc: Run, state_dir: Path) -> None:
    inproc("assign", "newstack", "oc0-ceph-4", "oc0-ceph-5", "--role", "Compute")
    inproc("unassign", "oc0-controller-2")
    lab_dir = state_dir / "glance-dcn"
    assert sorted(p.name for p in lab_dir.iterdir()) == ["lock", "state.json"]  # no temp files
    assert state_json(state_dir) == {
        "version": 1,
        "stacks": {"newstack": {"role": "Compute"}},
        "assignments": {
            "oc0-ceph-4": {"stack": "newstack", "role": "Compute"},
            "oc0-ceph-5": {"stack": "newstack", "role": "Compute"},
            "oc0-controller-2": {"stack": None, "role": None},
        },
        "snapshots": {},
    }


def test_damaged_state_through_the_entry_point(run: Run, state_dir: Path) -> None:
    path = state_dir / "glance-dcn" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    for args in (("show",), ("assign", "dcn0", "oc0-ceph-3")):
        proc = run(*args, check=2)  # a damaged state is bad input, like a bad layout
        assert proc.stderr == (f"error: the lab state {path} is not valid JSON (line 1): "
                               "Expecting property name enclosed in double quotes\n"
                               f"  hint: move it away (mv {path} {path}.bad) to start from "
                               "the layout's stacks (snapshot records are lost)\n")
        assert proc.stdout == ""
    assert path.read_text() == "{not json"


@pytest.mark.parametrize(("content", "message"), [
    ("", "is not valid JSON (line 1)"),
    ('{"version": 99}', "is damaged: unknown state version 99"),
    ("[]", "is damaged: not a JSON object"),
    ('{"version": 1, "assignments": {"oc0-ceph-4": "dcn0"}}', "is damaged"),
    ('{"version": 1, "stacks": {"x": {}}}', "is damaged: stacks.x has no role"),
    # names from the state become directories and groups: checked as the layout's are
    ('{"version": 1, "stacks": {"../../escaped": {"role": "Compute"}}}',
     "is damaged: stacks: '../../escaped' is not a valid stack name"),
    ('{"version": 1, "stacks": {"hosts": {"role": "Compute"}}}',
     "is damaged: stacks: 'hosts' cannot be a stack name"),
    ('{"version": 1, "stacks": {"x": {"role": "[/]"}}}', "stacks.x.role: '[/]' is not a valid"),
    ('{"version": 1, "assignments": {"oc0-ceph-4": {"stack": "../x"}}}',
     "assignments.oc0-ceph-4.stack: '../x' is not a valid stack name"),
    ('{"version": 1, "assignments": {"../oc0": {"stack": null}}}', "is not a node name"),
    ('{"version": 1, "assignments": []}', "assignments must be an object, got list"),
    ('{"version": 1, "snapshots": {"s": 1}}', "snapshots.s must be an object"),
    ('{"version": 1, "stacks": {"x": {"role": "Compute"}}', "is not valid JSON (line 1)"),
    ("[" * 100000 + "]" * 100000, "is nested too deeply"),
    (b'{"version": 1, "stacks": {"\xff": 1}}', "is not UTF-8 text (byte 27)"),
])
def test_damaged_state_is_a_clear_error(
        inproc: Run, state_dir: Path, content: str | bytes, message: str) -> None:
    path = state_dir / "glance-dcn" / "state.json"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    for args in (("show",), ("assign", "dcn0", "oc0-ceph-3")):
        proc = inproc(*args, check=None)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"error: the lab state {path} ")
        assert message in proc.stderr
        assert "hint: move it away" in proc.stderr
    # never overwritten
    assert (path.read_bytes() if isinstance(content, bytes) else path.read_text()) == content


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_state_that_is_no_file_is_refused_at_once(
        inproc: Run, state_dir: Path, kind: str) -> None:
    path = state_dir / "glance-dcn" / "state.json"
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading without a writer would block forever
    else:
        path.mkdir()
    proc = inproc("show", check=2)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert str(path) in proc.stderr and "hint: " in proc.stderr


def test_the_lab_is_locked_while_a_change_runs(state_dir: Path, inproc: Run) -> None:
    with StateStore(state_dir, "glance-dcn").locked("assign"):
        proc = inproc("assign", "dcn0", "oc0-ceph-3", check=1)
    assert proc.stderr.startswith("error: the lab is busy: labvirt assign (pid ")
    assert "hint: wait for it to finish" in proc.stderr
    inproc("assign", "dcn0", "oc0-ceph-3")  # the lock went away with its holder


def test_the_layout_file_is_never_modified(inproc: Run, layout: Path) -> None:
    before = layout.read_bytes()
    mtime = layout.stat().st_mtime_ns
    inproc("assign", "newstack", "oc0-ceph-3", "--role", "Compute")
    inproc("unassign", "oc0-ceph-4")
    inproc("stacks", "--reset")
    assert layout.read_bytes() == before
    assert layout.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in layout.parent.iterdir()) == ["glance-dcn.yml", "state"]


def test_reading_commands_do_not_create_the_state_dir(inproc: Run, state_dir: Path,
                                                      tmp_path: Path) -> None:
    inproc("show")
    inproc("stacks", "--format", "json")
    inproc("inventory", "-o", str(tmp_path / "inv"))
    assert (tmp_path / "inv" / "dcn0" / "deployed-server-environment.yaml").is_file()
    assert not state_dir.exists()
