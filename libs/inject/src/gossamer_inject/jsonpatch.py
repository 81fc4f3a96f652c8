"""RFC 6901 pointers and the RFC 6902 subset the injector emits (add, remove, replace).

The webhook hands operations to the apiserver; the CLI and the tests apply them locally with
:func:`apply`, which works on any ``dict``/``list`` subclass so ruamel's round-trip
containers keep their comments.
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence
from typing import Any, TypedDict

from gossamer_inject.errors import PatchError


class _OpBase(TypedDict):
    op: str
    path: str


class Op(_OpBase, total=False):
    value: Any


def escape(token: str) -> str:
    """Escape one path segment: ``~`` → ``~0`` then ``/`` → ``~1`` (the order matters)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def pointer(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def add(path: str, value: Any) -> Op:
    return {"op": "add", "path": path, "value": value}


def replace(path: str, value: Any) -> Op:
    return {"op": "replace", "path": path, "value": value}


def remove(path: str) -> Op:
    return {"op": "remove", "path": path}


def apply(doc: Any, ops: list[Op]) -> Any:
    """Apply ``ops`` to ``doc`` in place and return it (a root ``add`` replaces the whole)."""
    for op in ops:
        doc = _apply_one(doc, op)
    return doc


def _apply_one(doc: Any, op: Op) -> Any:
    path = op["path"]
    if path == "":
        if op["op"] in ("add", "replace"):
            return op["value"]
        raise PatchError(f"cannot {op['op']} the document root")
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} does not start with '/'")
    tokens = [unescape(t) for t in path[1:].split("/")]
    parent = doc
    for token in tokens[:-1]:
        parent = _child(parent, token, path)
    last = tokens[-1]
    kind = op["op"]
    if isinstance(parent, MutableMapping):
        if kind == "add":
            parent[last] = op["value"]
        elif last not in parent:
            raise PatchError(f"{kind} {path}: no such member")
        elif kind == "replace":
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        else:
            raise PatchError(f"unsupported op {kind!r}")
    elif isinstance(parent, MutableSequence):
        if kind == "add":
            index = len(parent) if last == "-" else _index(last, len(parent) + 1, path)
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[_index(last, len(parent), path)] = op["value"]
        elif kind == "remove":
            del parent[_index(last, len(parent), path)]
        else:
            raise PatchError(f"unsupported op {kind!r}")
    else:
        raise PatchError(f"{kind} {path}: parent is not a container")
    return doc


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, MutableMapping):
        if token not in node:
            raise PatchError(f"path {path!r}: no member {token!r}")
        return node[token]
    if isinstance(node, MutableSequence):
        return node[_index(token, len(node), path)]
    raise PatchError(f"path {path!r}: {token!r} is below a scalar")


def _index(token: str, bound: int, path: str) -> int:
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"path {path!r}: {token!r} is not an array index")
    index = int(token)
    if index >= bound:
        raise PatchError(f"path {path!r}: index {index} out of range")
    return index
