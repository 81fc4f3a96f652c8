"""A thin client of Prometheus's HTTP API: instant queries and readiness, nothing else.

Answers are parsed into :class:`Sample` values by :func:`parse_vector` (pure), which the
query code and its tests share. Replies are bounded in size: a Prometheus that answers with
more than :data:`MAX_REPLY` bytes is an error, not an out-of-memory.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_REPLY = 16 * 1024 * 1024
#: Prometheus is reached directly, never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrometheusError(Exception):
    """Prometheus could not be reached or refused the query."""


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


def parse_vector(reply: Mapping[str, Any]) -> list[Sample]:
    """The samples of an instant query's reply (``resultType`` vector); NaN values dropped."""
    if reply.get("status") != "success":
        raise PrometheusError(f"query failed: {reply.get('errorType')}: {reply.get('error')}")
    data = reply.get("data")
    if not isinstance(data, Mapping) or data.get("resultType") != "vector":
        raise PrometheusError("query did not return a vector")
    samples = []
    for item in data.get("result") or []:
        try:
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusError(f"malformed sample in reply: {item!r}") from exc
        if not math.isnan(value):
            samples.append(Sample(labels, value))
    return samples


class PrometheusClient:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise PrometheusError(f"Prometheus URL must be http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[Sample]:
        body = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            f"{self.url}/api/v1/query",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_REPLY + 1)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            raw = exc.read(MAX_REPLY + 1)
        except (OSError, urllib.error.URLError) as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        if len(raw) > MAX_REPLY:
            raise PrometheusError(f"Prometheus reply larger than {MAX_REPLY} bytes")
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise PrometheusError(f"Prometheus answered with something not JSON: {exc}") from exc
        if not isinstance(reply, dict):
            raise PrometheusError("Prometheus answered with something not an object")
        return parse_vector(reply)

    def ready(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/-/ready", timeout=self.timeout) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False
