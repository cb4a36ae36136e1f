"""What a node's serial console says about its boot: pure text reading, no I/O.

The console log of a node is appended across boots, so only the part since the last
kernel start counts. From it labvirt tells apart a node that is still booting, one that
has booted (userspace runs, a login prompt or cloud-init has spoken), one that has
finished (the tiny image's ready line, cloud-init's "finished" line) and one whose
cloud-init failed, and keeps the error lines that would otherwise scroll out of a tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What a boot prints first, in boot order (firmware, boot loader, kernel, init). A node
# prints the same kinds on every boot, so the last line of the earliest kind present in
# its log is where its current boot begins ("quiet" hides the kernel's own line).
_BOOT_STARTS = (
    re.compile(r"SeaBIOS \(version|BdsDxe: "),
    re.compile(r"GNU GRUB|Booting `"),
    re.compile(r"Linux version \d"),
    re.compile(r"labvirt-tiny: booting|Welcome to .*!"),
)
# The tiny image prints "labvirt-tiny: ready <hostname>" once dropbear has the seed's keys;
# cloud-init's final stage prints "Cloud-init v. 22.4 finished at ...".
_FINISHED = re.compile(r"labvirt-tiny: ready |Cloud-init v\. \S+ finished at ")
_BOOTED = re.compile(r"\blogin: *$|labvirt-tiny: (?:seed|no cidata|static|dhcp)|"
                     r"Cloud-init v\. \S+ running ", re.MULTILINE)
_STAGE = re.compile(r"Cloud-init v\. (\S+) (?:running '([^']+)'|finished)")
# A stage that failed stops cloud-init's work for good: the node will never be ready.
_FATAL = re.compile(r"failed (?:run of )?stage [\w-]+|Failed to start .*[Cc]loud-init|"
                    r"Failed to start .*Initial cloud-init|\[CRITICAL\]")
_ERROR = re.compile(r"\[(?:ERROR|CRITICAL)\]|failed (?:run of )?stage|\[FAILED\]|"
                    r"Traceback \(most recent")
# Terminal control sequences that systemd and getty write to the console.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ConsoleReading:
    booted: bool  # userspace runs: it got past the kernel and init
    finished: bool  # the image's own "ready" point (implies booted)
    failed: bool  # cloud-init failed a stage: waiting longer cannot help
    stage: str | None  # e.g. "cloud-init 22.4: modules:config"
    last_line: str
    error_lines: tuple[str, ...]
    lines: tuple[str, ...]  # the current boot, cleaned


def clean(text: str) -> list[str]:
    return [_CONTROL.sub("", line).rstrip() for line in text.replace("\r", "").split("\n")]


def current_boot(text: str) -> str:
    """The part of an appended console log written since the last kernel start."""
    for marker in _BOOT_STARTS:
        starts = [m.start() for m in marker.finditer(text)]
        if starts:
            # back up to the start of that line, so the boot begins with a whole line
            return text[text.rfind("\n", 0, starts[-1]) + 1:]
    return text


def read_console(text: str) -> ConsoleReading:
    boot = current_boot(text)
    lines = tuple(line for line in clean(boot) if line.strip())
    joined = "\n".join(lines)
    stage = None
    for m in _STAGE.finditer(joined):
        stage = f"cloud-init {m.group(1)}: {m.group(2) or 'finished'}"
    finished = _FINISHED.search(joined) is not None
    failed = _FATAL.search(joined) is not None
    errors = tuple(dict.fromkeys(line.strip() for line in lines if _ERROR.search(line)))
    return ConsoleReading(
        booted=finished or _BOOTED.search(joined) is not None,
        finished=finished,
        failed=failed,
        stage=stage,
        last_line=lines[-1].strip() if lines else "",
        error_lines=errors,
        lines=lines,
    )


def excerpt(reading: ConsoleReading, lines: int = 20, max_errors: int = 12) -> str:
    """The console lines a user needs: error lines that scrolled out of the tail, then the
    tail itself."""
    tail = list(reading.lines[-lines:])
    shown = {t.strip() for t in tail}
    earlier = [e for e in reading.error_lines if e not in shown][:max_errors]
    parts = []
    if earlier:
        parts.extend(earlier)
        parts.append("...")
    parts.extend(tail)
    return "\n".join(parts) if parts else "(the console is empty)"
