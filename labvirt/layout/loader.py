"""Load layout files the way `ansible-playbook -e @A -e @B` layers them, remembering where
every value came from so that errors can name the file and line.

Merge rule (tripleo-lab's): a later file's top-level key replaces the earlier value, so a
`vms:` list in a later file replaces the whole list. The one exception is labvirt's own
`labvirt:` section, which tripleo-lab never reads: it is merged key by key (mappings
recursively, anything else replaced) so that a small layer such as overrides/tiny.yml can
change a few settings and keep the stacks of the layout below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labvirt.errors import LayoutError, Location

Path_ = tuple[str | int, ...]

MERGED_KEYS = frozenset({"labvirt"})


@dataclass(frozen=True)
class LoadedFile:
    """One parsed file: its data and the line of every path inside it."""

    name: str
    data: dict[str, Any]
    lines: dict[Path_, int]


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


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _walk(node: yaml.Node, path: Path_, file: str, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise LayoutError(
                    f"duplicate key {key!r} (first on line {seen[key]})",
                    Location(file, line, format_path((*path, key)) or None),
                    "YAML keeps only the last one silently; remove one of them",
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), file, lines)
            # point a key at its own line, not at the value's (a block value starts later)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), file, lines)


def parse_text(text: str, name: str) -> LoadedFile:
    """Parse one YAML document; errors carry the file and line."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            lines: dict[Path_, int] = {}
            if node is None:
                return LoadedFile(name, {}, {})
            _walk(node, (), name, lines)
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
    for key in data:
        if not isinstance(key, str):
            raise LayoutError(
                f"top-level key {key!r} is not a string", Location(name, lines.get((key,)))
            )
    return LoadedFile(name, data, lines)


def load_file(path: Path) -> LoadedFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(
            "layout file not found", Location(str(path)), "check the path given to -f"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read layout file: {exc}", Location(str(path))) from None
    return parse_text(text, str(path))


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _deep_merge(base[key], value) if key in base else value
        return out
    return over


def merge(files: list[LoadedFile]) -> RawLayout:
    data: dict[str, Any] = {}
    for f in files:
        for key, value in f.data.items():
            if key in MERGED_KEYS and key in data:
                data[key] = _deep_merge(data[key], value)
            else:
                data[key] = value
    return RawLayout(data, list(files))


def load_layers(paths: list[Path]) -> RawLayout:
    return merge([load_file(p) for p in paths])
