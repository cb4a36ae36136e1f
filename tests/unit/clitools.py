"""Helpers for the unit tier: where things are, running the real CLI, golden files.

Imported as `from clitools import ...` (pytest puts tests/unit on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LABVIRT = BIN / "labvirt"
DEMO = ("-f", "overrides/glance-dcn.yml", "-f", "overrides/tiny.yml")
# A state root that commands which only read must never create (tests check it stays absent).
NO_STATE = Path("/nonexistent/labvirt-state")
# Set LABVIRT_REGEN_GOLDEN=1 to rewrite golden files instead of comparing with them.
REGEN = os.environ.get("LABVIRT_REGEN_GOLDEN") == "1"


def labvirt(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None,
            check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run the installed `labvirt` entry point; assert its exit status unless check is None."""
    # The user's own LABVIRT_* settings must not leak in, and no test may read or write the
    # user's state: unless a test says otherwise, state goes to a path that must stay absent.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABVIRT_")}
    full_env["LABVIRT_STATE_DIR"] = str(NO_STATE)
    full_env.update(env or {})
    proc = subprocess.run([str(LABVIRT), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if check is not None:
        assert proc.returncode == check, (
            f"labvirt {' '.join(map(str, args))}: exit {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def golden(path: Path, actual: str) -> None:
    """Compare `actual` with the golden file at `path` (or rewrite it under REGEN)."""
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.is_file(), f"{path} is missing; create it with LABVIRT_REGEN_GOLDEN=1"
    assert actual == path.read_text(), (
        f"output differs from {path.relative_to(REPO)}; if the change is intended, "
        "regenerate with LABVIRT_REGEN_GOLDEN=1 and review `git diff tests/golden`")



def invoke(*args: str | Path, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """The same CLI in-process (click's runner): for the many small cases where a process
    per call would make the tier slow. Entry-point behaviour is tested with `labvirt()`."""
    from click.testing import CliRunner

    from labvirt.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args],
                                env={"LABVIRT_STATE_DIR": str(NO_STATE)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    proc = subprocess.CompletedProcess(["labvirt", *map(str, args)], result.exit_code,
                                       result.stdout, result.stderr)
    if check is not None:
        assert proc.returncode == check, (
            f"labvirt {' '.join(map(str, args))}: exit {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run_main(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`labvirt ARGS` through the console script's own `main()` (its error handling
    included), in this process: a few milliseconds instead of a fresh interpreter."""
    import contextlib
    import io

    from labvirt.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, Path.cwd()
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("LABVIRT_")}
    for key in saved_env:
        del os.environ[key]
    os.environ["LABVIRT_STATE_DIR"] = str(NO_STATE)
    sys.argv = ["labvirt", *map(str, args)]
    code: int | str | None = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        del os.environ["LABVIRT_STATE_DIR"]
        os.environ.update(saved_env)
    assert isinstance(code, int | None), code
    return subprocess.CompletedProcess(["labvirt", *map(str, args)], code or 0,
                                       stdout.getvalue(), stderr.getvalue())
