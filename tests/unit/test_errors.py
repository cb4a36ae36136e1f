"""The bad-input corpus: every tests/errors/<case> layout and the exact message it gives.

A case is `<case>.yml`, or `<case>.1.yml`, `<case>.2.yml`, ... layered in that order; beside
it `<case>.log` holds the exact stderr of `labvirt -f <files> show`, run from tests/errors so
that messages name files relatively. A `.log` without any layout names a missing -f file
(only cases called missing-file*). Regenerate: LABVIRT_REGEN_GOLDEN=1 pytest tests -k golden.

Every case runs through the console script's `main()` in-process (a fresh interpreter per
case would make the tier slow); a sample of cases also runs as a real `labvirt` process and
must print the very same bytes.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from subprocess import CompletedProcess

import pytest
from clitools import REGEN, REPO, labvirt, run_main

pytestmark = pytest.mark.unit

ERRORS = REPO / "tests" / "errors"
LAYER_RE = re.compile(r"^(?P<case>.+?)(?:\.(?P<n>\d+))?\.yml$")


def discover() -> dict[str, list[str]]:
    """case -> layout files (relative to tests/errors), in layering order."""
    layers: dict[str, list[tuple[int, str]]] = {}
    for path in ERRORS.glob("*.yml"):
        m = LAYER_RE.match(path.name)
        assert m, path
        layers.setdefault(m["case"], []).append((int(m["n"] or 0), path.name))
    cases = {case: [name for _, name in sorted(files)] for case, files in layers.items()}
    for log in ERRORS.glob("*.log"):
        if log.stem not in cases:
            assert log.stem.startswith("missing-file"), (
                f"{log.name} has no layout beside it; only missing-file* cases may")
            cases[log.stem] = [f"{log.stem}.yml"]
    return dict(sorted(cases.items()))


CASES = discover()


# Cases that also run as a process: one of each kind of failure (YAML, file, layering,
# types, several at once, injection, stacks).
PROCESS_CASES = ["yaml-tab", "missing-file", "top-level-list", "layered-vms-replaced",
                 "many-problems", "name-xml-injection", "node-in-two-stacks", "missing-vms"]


def args_of(case: str) -> list[str]:
    return [a for f in CASES[case] for a in ("-f", f)] + ["show"]


@pytest.fixture(scope="module")
def results() -> dict[str, CompletedProcess[str]]:
    """Every case run once through `main()`."""
    return {case: run_main(*args_of(case), cwd=ERRORS) for case in CASES}


@pytest.fixture(scope="module")
def process_results() -> dict[str, CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(labvirt, *args_of(case), cwd=ERRORS, check=None)
                   for case in PROCESS_CASES}
        return {case: f.result() for case, f in futures.items()}


def test_corpus_covers_the_required_cases() -> None:
    required = {
        "yaml-bad-indent", "yaml-tab", "top-level-list", "duplicate-key", "cpu-string",
        "memory-list", "interfaces-number", "memory-zero", "disksize-negative",
        "num-osds-negative", "resize-memory-zero", "swap-zero", "duplicate-node",
        "stack-unknown-node", "node-in-two-stacks", "ctlplane-ip-outside-cidr",
        "ctlplane-ip-twice", "ctlplane-ip-gateway", "name-xml-injection",
        "name-shell-injection", "vm-prefix-path", "stack-name-space", "labvirt-unknown-key",
        "ctlplane-unknown-key", "domain-type-xen", "bad-cidr", "undercloud-in-stack",
        "missing-vms", "missing-file", "layered-vms-replaced",
    }  # fmt: skip
    assert required <= set(CASES), sorted(required - set(CASES))
    assert len(CASES["layered-vms-replaced"]) == 2


@pytest.mark.parametrize("case", list(CASES))
def test_golden_error_message(case: str, results: dict[str, CompletedProcess[str]]) -> None:
    proc = results[case]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    log = ERRORS / f"{case}.log"
    if REGEN:
        log.write_text(proc.stderr)
        return
    assert log.is_file(), f"{log.name} is missing; create it with LABVIRT_REGEN_GOLDEN=1"
    assert proc.stderr == log.read_text()


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_golden_error_message_from_the_installed_command(
        case: str, process_results: dict[str, CompletedProcess[str]],
        results: dict[str, CompletedProcess[str]]) -> None:
    proc = process_results[case]
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "Traceback" not in proc.stderr
    assert proc.stderr == results[case].stderr


@pytest.mark.parametrize("case", list(CASES))
def test_golden_error_message_says_where(case: str) -> None:
    """Every message line names a layout file given with -f (relative, as given)."""
    log = ERRORS / f"{case}.log"
    if REGEN or not log.is_file():
        pytest.skip("the .log is being (re)generated")
    errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert errors, "no error line"
    for line in errors:
        assert any(line.startswith(f"error: {f}") for f in CASES[case]), line
        assert "/" not in line.split(":", 2)[1], f"path is not relative: {line}"


def test_golden_layered_message_names_both_files(
        results: dict[str, CompletedProcess[str]]) -> None:
    """The stack is written in the first file, the vms list that dropped its node in the
    second: the message must point at the first and name the second."""
    err = results["layered-vms-replaced"].stderr
    assert err.startswith("error: layered-vms-replaced.1.yml:")
    assert "layered-vms-replaced.2.yml" in err
    assert "oc0-ceph-4" in err


@pytest.mark.parametrize("case", ["name-xml-injection", "name-shell-injection",
                                  "vm-prefix-path", "name-trailing-newline",
                                  "ssh-key-newline"])
def test_golden_injection_attempts_are_refused(
        case: str, results: dict[str, CompletedProcess[str]]) -> None:
    err = results[case].stderr
    assert results[case].returncode == 2
    assert "is not a valid" in err or "control character" in err
