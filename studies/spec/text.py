"""Reading a spec from untrusted text: JSON or YAML with bounded nesting and size.

Nothing is built before it is known to be small: YAML's composer stops past `MAX_DEPTH`,
and the composed node graph is measured with its aliases expanded (an alias bomb of a
few hundred bytes expands to megabytes) before any object is constructed. JSON's
`NaN` and `Infinity`, which Python's json accepts, are refused like YAML's `.nan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import yaml

from stagetune.studies.errors import SpecError

MAX_DEPTH = 32  # a spec needs 5 levels; a plugin's options a few more
MAX_BYTES = 1_000_000  # what a spec may expand to, unless the caller says otherwise
MAX_DIGITS = 100  # an integer longer than this is no seed, size or count
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def parse_spec_text(text: str, kind: str = "yaml", max_bytes: int = MAX_BYTES) -> Any:
    """Parse `text` as `kind` ('json' or 'yaml'); a SpecError says what is wrong with it."""
    label = "JSON" if kind == "json" else "YAML"
    try:
        if kind == "json":
            data = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
        else:
            data = _load_yaml(text, max_bytes)
    except RecursionError:
        raise _too_deep("") from None
    except SpecError:
        raise
    except (yaml.YAMLError, ValueError) as exc:  # json's errors are ValueErrors
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise SpecError(f"the body is not valid {label}: {first}") from None
    problems = shape_problems(data)
    if problems:
        raise SpecError("; ".join(f"{w}: {m}" if w else m for w, m in problems), problems)
    return data


def shape_problems(data: Any) -> list[tuple[str, str]]:
    """Nesting past MAX_DEPTH and numbers that are not finite, by field path: what any
    spec, whatever its source, must not hold. Walks without recursion."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        where = ".".join(path)
        if isinstance(node, float) and not math.isfinite(node):
            problems.append((where, f"{node} is not allowed; give a finite number"))
        elif isinstance(node, dict | list):
            if len(path) >= MAX_DEPTH:
                problems.append(_too_deep(where).problems[0])
                continue
            stack.extend((child, (*path, str(key))) for key, child in _items(node))
    return sorted(problems)


def _items(node: dict[Any, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    return iter(node.items()) if isinstance(node, dict) else enumerate(node)


def _too_deep(where: str) -> SpecError:
    what = f"nested deeper than {MAX_DEPTH} levels; a spec needs a handful"
    return SpecError(f"{where}: {what}" if where else what, [(where, what)])


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed; give a finite number")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("+-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits; numbers have at most {MAX_DIGITS}")
    return int(digits)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses to nest past MAX_DEPTH (PyYAML's composer recurses
    once per level: 50,000 levels would exhaust the stack)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _too_deep("")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_DIGITS:  # before int() builds it
            raise ValueError(f"an integer of {len(node.value)} digits; numbers have at most "
                             f"{MAX_DIGITS}")
        return super().construct_yaml_int(node)  # type: ignore[no-any-return]


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _load_yaml(text: str, max_bytes: int) -> Any:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size, depth = _expanded(node)
        if depth > MAX_DEPTH:
            raise _too_deep("")
        if size > max_bytes:
            raise SpecError(f"the spec expands to about {size} bytes with its YAML aliases; "
                            f"at most {max_bytes} are allowed")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded(root: yaml.Node) -> tuple[int, int]:
    """(bytes, depth) of the node graph with every alias expanded, computed once per node,
    so a billion-laughs graph costs its own size; a node that contains itself is refused."""
    done: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()  # the nodes on the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        kids = _children(node)
        if children_done:
            open_.discard(id(node))
            if isinstance(node, yaml.ScalarNode):
                done[id(node)] = (len(node.value) + 2, 0)
            else:
                done[id(node)] = (2 + sum(done[id(k)][0] + 1 for k in kids),
                                  1 + max((done[id(k)][1] for k in kids), default=0))
            continue
        if id(node) in done:
            continue
        open_.add(id(node))
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_:
                raise SpecError("a YAML alias refers to a node that contains it; "
                                "a spec cannot be recursive")
            if id(kid) not in done:
                stack.append((kid, False))
    return done[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
