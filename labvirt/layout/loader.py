"""Load layout files the way `ansible-playbook -e @A -e @B` layers them, remembering where
every value came from so that errors can name the file and line.

Merge rule (tripleo-lab's): a later file's top-level key replaces the earlier value, so a
`vms:` list in a later file replaces the whole list. The one exception is labvirt's own
`labvirt:` section, which tripleo-lab never reads: it is merged key by key (mappings
recursively, anything else replaced) so that a small layer such as overrides/tiny.yml can
change a few settings and keep the stacks of the layout below it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labvirt.errors import LayoutError, Location

Path_ = tuple[str | int, ...]

MERGED_KEYS = frozenset({"labvirt"})
# Top-level keys whose whole subtree labvirt reads: every mapping key in them must be text.
READ_KEYS = frozenset({"labvirt", "vms"})

# Bounds that make reading any file take bounded time and memory. A real overrides file is
# a few KiB, nested a few levels; PyYAML (pure Python, for the depth check) reads ~200 KiB/s.
MAX_LAYOUT_BYTES = 1024 * 1024
MAX_DEPTH = 50
# values after expanding aliases: an alias bomb (`&a [*b, *b, ...]`) stays a few lines long
MAX_VALUES = 200_000
# digits in one number: far above any value labvirt reads; Python refuses >4300 anyway
MAX_DIGITS = 100

_STR_TAG = "tag:yaml.org,2002:str"
_TAG_KIND = {
    "tag:yaml.org,2002:null": "null (nothing)",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
}


def yaml_kind(tag: str) -> str:
    """What YAML 1.1 made of a plain scalar, in words ("a number", "a date", ...)."""
    return _TAG_KIND.get(tag, f"a value of type {tag.rsplit(':', 1)[-1]}")


@dataclass(frozen=True)
class LoadedFile:
    """One parsed file: its data and the line of every path inside it."""

    name: str
    data: dict[str, Any]
    lines: dict[Path_, int]
    # the text of every scalar YAML did not read as a string (`0x1F`, `010`, `yes`, `~`):
    # names are checked as the user wrote them, not as YAML 1.1 converted them
    scalars: dict[Path_, tuple[str, str]] = field(default_factory=dict)  # text, tag


@dataclass
class RawLayout:
    """The merged data of all layers plus a way to say where a path came from."""

    data: dict[str, Any]
    files: list[LoadedFile] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return [f.name for f in self.files]

    def locate(self, path: Path_) -> Location:
        """Where `path` was written: the closest existing parent in the layer it came from.

        A replaced top-level key comes only from the last layer that sets it; the merged
        `labvirt:` section may come from any layer, the last one that has the path winning.
        """
        key = format_path(path) or None
        files = self.files
        if path and path[0] not in MERGED_KEYS:
            owners = [f for f in files if (path[0],) in f.lines]
            files = owners[-1:] or files
        probe = tuple(path)
        while True:
            for f in reversed(files):
                if probe in f.lines:
                    return Location(f.name, f.lines[probe], key)
            if not probe:
                break
            probe = probe[:-1]
        return Location(files[-1].name if files else "<layout>", None, key)

    def scalar_source(self, path: Path_) -> tuple[str, str] | None:
        """(text, tag) as written, when the value at `path` is a scalar YAML did not read
        as a string; None for strings, collections and values not written in any file."""
        files = self.files
        if path and path[0] not in MERGED_KEYS:
            owners = [f for f in files if (path[0],) in f.lines]
            files = owners[-1:]
        for f in reversed(files):
            if path in f.lines:
                return f.scalars.get(path)
        return None


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds: nesting depth, expanded size, recursive aliases,
    number length, and values its constructors cannot build (a 13th month) reported with
    their line instead of escaping as Python errors."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.file = name
        self.depth = 0
        self.open_anchors: set[str] = set()
        self.aliases = False  # without aliases the file's size bounds the values
        # expanded size and depth of every composed node, by id (nodes live until disposed)
        self.sizes: dict[int, tuple[int, int]] = {}

    def _fail(self, message: str, mark: Any, hint: str) -> None:
        raise LayoutError(message, Location(self.file, mark.line + 1 if mark else None), hint)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self.open_anchors:
                self._fail(f"alias *{event.anchor} refers to the value that contains it",
                           event.start_mark, "a recursive alias has no end; copy the values "
                           "instead of referring to the enclosing one")
            self.aliases = True
            node = super().compose_node(parent, index)
            size, depth = self.sizes.get(id(node), (1, 1))
            self._bound(size, self.depth + depth, event.start_mark)
            return node
        event = self.peek_event()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._fail(f"values are nested more than {MAX_DEPTH} levels deep",
                       event.start_mark, "a layout is a few levels deep; check the brackets "
                       "and indentation near that line")
        anchor = event.anchor
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            if anchor is not None:
                self.open_anchors.discard(anchor)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        measured = [self.sizes.get(id(c), (1, 1)) for c in children]
        size = 1 + sum(m[0] for m in measured)
        depth = 1 + max((m[1] for m in measured), default=0)
        self.sizes[id(node)] = (size, depth)
        self._bound(size, self.depth + depth, event.start_mark)
        return node

    def _bound(self, size: int, depth: int, mark: Any) -> None:
        if size > MAX_VALUES and self.aliases:
            self._fail(f"the aliases here expand to more than {MAX_VALUES} values",
                       mark, "a layout needs far fewer; write the values out instead of "
                       "repeating aliases of aliases")
        if depth > MAX_DEPTH:
            self._fail(f"with its aliases expanded, this value is nested more than "
                       f"{MAX_DEPTH} levels deep", mark,
                       "a layout is a few levels deep; refer to fewer nested aliases")

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_DIGITS:
            self._fail(f"a number of {digits} digits (labvirt reads at most {MAX_DIGITS})",
                       node.start_mark,
                       "no value labvirt reads is that large; check it, or quote it if it "
                       "is text")
        value: int = super().construct_yaml_int(node)
        return value

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            self._fail(f"YAML cannot read the value {str(shown)[:60]!r} as "
                       f"{yaml_kind(node.tag)}: {exc}", node.start_mark,
                       "quote it to make it text, or correct it")
            raise  # pragma: no cover (_fail raises)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _walk(node: yaml.Node, path: Path_, file: str, lines: dict[Path_, int],
          scalars: dict[Path_, tuple[str, str]]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            read = not path or path[0] in READ_KEYS
            if (read and isinstance(key_node, yaml.ScalarNode) and key_node.tag != _STR_TAG
                    and key != "<<"):
                where = format_path(path) or None
                text = f"{key!r}" if key else "an empty key"
                raise LayoutError(
                    f"key {text} is read by YAML as {yaml_kind(key_node.tag)}, not as text",
                    Location(file, line, where),
                    f"quote it ('{key}':) if it is a name, or remove it" if key
                    else "give the key a name, or remove the line")
            if key in seen:
                raise LayoutError(
                    f"duplicate key {key!r} (first on line {seen[key]})",
                    Location(file, line, format_path((*path, key)) or None),
                    "YAML keeps only the last one silently; remove one of them",
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), file, lines, scalars)
            # point a key at its own line, not at the value's (a block value starts later)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), file, lines, scalars)
    elif isinstance(node, yaml.ScalarNode) and node.tag != _STR_TAG:
        scalars[path] = (node.value, node.tag)


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def parse_text(text: str, name: str) -> LoadedFile:
    """Parse one YAML document; errors carry the file and line."""
    lines: dict[Path_, int] = {}
    scalars: dict[Path_, tuple[str, str]] = {}
    try:
        loader = _BoundedLoader(text, name)
        try:
            node = loader.get_single_node()
            if node is None:
                return LoadedFile(name, {}, {})
            _walk(node, (), name, lines, scalars)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        column = f" (column {mark.column + 1})" if mark else ""
        hint = "check indentation and quoting near that line"
        if "'\\t'" in problem:
            hint = "YAML does not allow tabs for indentation; indent with spaces"
        raise LayoutError(f"not valid YAML{column}: {problem}", Location(name, line),
                          hint) from None
    except yaml.reader.ReaderError as exc:
        # a control character such as NUL: the reader counts characters, not lines
        raise LayoutError(
            f"not valid YAML: character U+{exc.character:04X} is not allowed in a YAML file",
            Location(name, _line_of(text, exc.position)),
            "a layout is text; remove the control character (is it a binary file?)") from None
    except yaml.YAMLError as exc:
        raise LayoutError(f"not valid YAML: {exc}", Location(name)) from None
    if data is None:
        return LoadedFile(name, {}, {})
    if not isinstance(data, dict):
        raise LayoutError(
            f"the file must be a mapping of keys (like 'vms:'), not a {type(data).__name__}",
            Location(name, 1),
            "a list of VMs goes under the key vms:" if isinstance(data, list) else None,
        )
    return LoadedFile(name, data, lines, scalars)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_LAYOUT_BYTES; anything else (a FIFO,
    /dev/zero, a directory, a huge file) is refused without blocking or reading it all."""
    where = Location(str(path))
    not_a_file = "give -f a YAML file; a FIFO, a device or a directory cannot be a layout"
    try:
        # stat first: a FIFO or a device is refused without even being opened
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise LayoutError(f"the layout is {_file_kind(mode)}, not a file", where, not_a_file)
        # O_NONBLOCK: should it have become a FIFO since, opening does not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LayoutError(
            "layout file not found", where, "check the path given to -f") from None
    except PermissionError:
        raise LayoutError("cannot read layout file: permission denied", where,
                          "check the file's permissions, or copy it somewhere readable"
                          ) from None
    except OSError as exc:
        raise LayoutError(f"cannot read layout file: {exc.strerror or exc}", where,
                          "check the path given to -f") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LayoutError(f"the layout is {_file_kind(st.st_mode)}, not a file", where,
                              not_a_file)
        too_big = LayoutError(
            f"the layout is larger than {MAX_LAYOUT_BYTES // 1024} KiB, far more than a "
            "layout needs", where, "is it the right file? Layouts are a few KiB of YAML")
        if st.st_size > MAX_LAYOUT_BYTES:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_LAYOUT_BYTES:
            chunk = os.read(fd, MAX_LAYOUT_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_LAYOUT_BYTES:
            raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise LayoutError(f"cannot read layout file: {exc.strerror or exc}", where) from None
    finally:
        os.close(fd)


def load_file(path: Path) -> LoadedFile:
    raw = read_bounded(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise LayoutError(
            f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})",
            Location(str(path), line),
            "save the file as UTF-8; is it a layout at all?") from None
    return parse_text(text, str(path))


def _deep_merge(base: Any, over: Any, path: Path_, layer: LoadedFile,
                earlier: list[LoadedFile]) -> Any:
    if isinstance(base, dict) and over is None:
        # `labvirt:` (or `networks:`, ...) left empty in a later layer would silently drop
        # every setting of the layers below: the lab's name, networks, stacks
        below = next((f.name for f in reversed(earlier) if path in f.lines), "a layer below")
        where = format_path(path)
        raise LayoutError(
            f"empty here, which would erase the settings it has in {below}",
            Location(layer.name, layer.lines.get(path), where),
            f"remove the empty {path[-1]}: line to keep them, or write under it the keys "
            "to change (a later layer changes only the keys it writes)")
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = (_deep_merge(base[key], value, (*path, key), layer, earlier)
                        if key in base else value)
        return out
    return over


def merge(files: list[LoadedFile]) -> RawLayout:
    data: dict[str, Any] = {}
    for i, f in enumerate(files):
        for key, value in f.data.items():
            if key in MERGED_KEYS and key in data:
                data[key] = _deep_merge(data[key], value, (key,), f, files[:i])
            else:
                data[key] = value
    return RawLayout(data, list(files))


def load_layers(paths: list[Path]) -> RawLayout:
    return merge([load_file(p) for p in paths])
