"""Bounded YAML loading for scenario, compare and sweep files: safe_load plus limits on what a small file can expand into.

yaml.safe_load already refuses code, but a 1 kB file of nested aliases ("billion laughs") composes
to a graph that expands into ~10^9 nodes once anything walks it (validation, hashing, dumping),
and deep nesting overflows the composer's recursion. So the composed node graph is measured
before anything is built from it: at most MAX_NODES nodes after alias expansion, MAX_DEPTH levels,
no recursive aliases, and no key repeated in one mapping (PyYAML would silently keep the last).
Every error is a one-line ConfigError naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgevlm.sim.errors import ConfigError

#: A full scenario has a few hundred nodes; anchors and aliases are fine well below these bounds.
MAX_NODES = 100_000
MAX_DEPTH = 64
#: The largest YAML file read at all (a scenario is a few kB).
MAX_YAML_BYTES = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    def compose_document(self):
        node = super().compose_document()
        _measure(node, self.name)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _line(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _measure(root: yaml.Node, where: str) -> None:
    """Expanded size and depth of the node graph (memoised over shared alias targets), and duplicate keys."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise ConfigError("", f"{where}: {_line(node)}: this value expands to more than {MAX_NODES} "
                                      "nodes (aliases of aliases?); refusing to load it")
            if depth[key] > MAX_DEPTH:
                raise ConfigError("", f"{where}: {_line(node)}: nested more than {MAX_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError("", f"{where}: {_line(node)}: an alias refers to a value that contains it "
                                  "(recursive anchor)")
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in seen:
                        raise ConfigError("", f"{where}: {_line(k)}: duplicate key '{k.value}'")
                    seen.add(k.value)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))


def load(text: str, where: str) -> Any:
    """yaml.safe_load with the bounds above; raises ConfigError('', 'FILE: line N: ...')."""
    loader = _BoundedLoader(text)
    loader.name = where
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0] or "invalid YAML"
        raise ConfigError("", f"{where}: {problem}{at}") from None
    except RecursionError:
        raise ConfigError("", f"{where}: nested too deeply to read (more than {MAX_DEPTH} levels allowed)") from None
    finally:
        loader.dispose()


def read_file(path: str | Path, what: str, field: str = "") -> Any:
    """Read a `what` YAML file (e.g. "scenario"): size-limited, UTF-8, bounded as above.

    Every failure is one ConfigError on `field` naming the file; an empty file is an error too.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(field, f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(field, f"{path}: {what} file is larger than {MAX_YAML_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = load(text, str(path))
    except ConfigError as exc:
        raise ConfigError(field, str(exc)) from None
    if data is None:
        raise ConfigError(field, f"{path}: the file is empty; a {what} file is a YAML mapping (see scenarios/)")
    return data
