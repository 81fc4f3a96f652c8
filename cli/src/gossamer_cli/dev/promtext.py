"""A small parser for the Prometheus text exposition format (what proxies serve on /metrics)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]


class PromTextError(ValueError):
    """A line is not valid exposition format; the message names the line."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default


def parse(text: str) -> Iterator[Sample]:
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield _sample(line)
        except (ValueError, IndexError) as exc:
            raise PromTextError(f"line {number}: {exc}: {line[:120]!r}") from None


def _sample(line: str) -> Sample:
    brace = line.find("{")
    if brace == -1:
        name, _, rest = line.partition(" ")
        labels: Labels = ()
    else:
        name = line[:brace]
        labels, end = _labels(line, brace + 1)
        rest = line[end:]
    value_text = rest.strip().split(" ")[0]
    if not name or not value_text:
        raise ValueError("missing name or value")
    value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(value_text)
    return Sample(name, labels, float(value_text) if value is None else value)


def _labels(line: str, i: int) -> tuple[Labels, int]:
    pairs: list[tuple[str, str]] = []
    while True:
        while line[i] in " ,":
            i += 1
        if line[i] == "}":
            return tuple(pairs), i + 1
        eq = line.index("=", i)
        key = line[i:eq].strip()
        if line[eq + 1] != '"':
            raise ValueError(f"label {key} has no quoted value")
        i = eq + 2
        value: list[str] = []
        while line[i] != '"':
            if line[i] == "\\":
                i += 1
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(line[i], line[i]))
            else:
                value.append(line[i])
            i += 1
        pairs.append((key, "".join(value)))
        i += 1
