"""labvirt's own exceptions.

Every failure a user can cause or fix is one of these: a message that says what is
wrong, where, and a hint that says how to fix it. The CLI prints them without a
traceback; `exit_code` tells it which status to use (2 for bad input).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in the layout a value came from."""

    file: str
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}" if self.key else where


class LabvirtError(Exception):
    """Base class: a message for the user, an optional hint, an exit status."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(LabvirtError):
    """The user asked for something that cannot be: bad arguments, unknown names."""

    exit_code = 2


class LayoutError(InputError):
    """A layout file is wrong; `location` says where."""

    def __init__(self, message: str, location: Location | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.location = location

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        text = f"error: {where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class LayoutErrors(InputError):
    """Several layout problems found in one pass, reported together."""

    def __init__(self, errors: list[LayoutError]):
        super().__init__(f"{len(errors)} problem(s) in the layout")
        self.errors = errors

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class StateError(LabvirtError):
    """The lab's state file is unreadable or locked by another run."""


class StateFileError(StateError):
    """The lab's state file is damaged (not JSON, wrong types, bad names): the user has to
    move it away, as with a bad layout, so the status is 2."""

    exit_code = 2


class LibvirtFailure(LabvirtError):
    """libvirt refused an operation; raised only by the connection room."""


class NotOurs(LabvirtError):
    """An object with a lab name exists but carries no labvirt metadata for this lab."""

    exit_code = 2
