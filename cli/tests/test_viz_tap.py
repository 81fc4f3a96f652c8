"""`gossamer viz tap` / `top` pure parts: targets, the ObserveRequest, lines, table, rate."""

from __future__ import annotations

import json
from typing import Any

from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import http_types_pb2, tap_pb2
from gossamer_cli.viz.resources import parse_resource
from gossamer_cli.viz.tap_client import per_call_limit
from gossamer_cli.viz.tap_identity import tap_identity
from gossamer_cli.viz.tap_query import TapFilters, observe_request, tap_targets
from gossamer_cli.viz.tap_render import PodInfo, render_json, render_line
from gossamer_cli.viz.top import TopTable

TapEvent = tap_pb2.TapEvent


def _pod(name: str, ip: str, owner: str | None = "web-5d9c", meshed: bool = True) -> dict[str, Any]:
    containers = [{"name": "app"}] + ([{"name": "linkerd-proxy"}] if meshed else [])
    refs = [{"kind": "ReplicaSet", "name": owner, "controller": True}] if owner else []
    return {
        "metadata": {
            "name": name,
            "namespace": "demo",
            "labels": {"app": "web", "pod-template-hash": "5d9c"},
            "ownerReferences": refs,
        },
        "spec": {"containers": containers, "serviceAccountName": "web"},
        "status": {"phase": "Running", "podIP": ip},
    }


def test_targets_are_the_resources_live_meshed_pods_with_their_identities() -> None:
    pods = [
        _pod("web-2", "10.0.0.2"),
        _pod("web-1", "10.0.0.1"),
        _pod("web-x", "10.0.0.3", meshed=False),
        _pod("other", "10.0.0.4", owner="other-5d9c"),
        {**_pod("web-3", ""), "status": {"phase": "Pending"}},
    ]
    targets = tap_targets(parse_resource("deploy/web"), pods)
    assert [(t.pod, t.ip) for t in targets] == [("web-1", "10.0.0.1"), ("web-2", "10.0.0.2")]
    assert targets[0].identity == "web.demo.serviceaccount.identity.gossamer.cluster.local"
    assert len(tap_targets(parse_resource("ns/demo"), pods)) == 3
    service = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}}
    assert len(tap_targets(parse_resource("svc/web"), pods, [service])) == 3
    assert tap_identity("gossamer", "cluster.local") == (
        "tap.gossamer-viz.serviceaccount.identity.gossamer.cluster.local"
    )


def test_filters_become_an_all_match() -> None:
    filters = TapFilters(
        to=parse_resource("deploy/slow"), to_namespace="demo", method="post", path="/api"
    )
    request = observe_request(filters)
    matches = request.match.all.matches
    assert [m.WhichOneof("match") for m in matches] == [
        "destination_label", "destination_label", "http", "http",
    ]  # fmt: skip
    assert (matches[1].destination_label.key, matches[1].destination_label.value) == (
        "deployment",
        "slow",
    )
    assert matches[2].http.method.registered == http_types_pb2.HttpMethod.POST
    assert matches[3].http.path.prefix == "/api"
    assert request.limit > 1_000_000
    assert not request.HasField("match") or request.match.WhichOneof("match") == "all"
    assert not observe_request(TapFilters()).HasField("match")
    assert observe_request(TapFilters(), headers=True).extract.http.HasField("headers")


def _event(kind: str, **fields: Any) -> TapEvent:
    event = TapEvent(proxy_direction=TapEvent.INBOUND)
    event.source.CopyFrom(tcp_address_to_proto("10.0.0.5", 41000))
    event.destination.CopyFrom(tcp_address_to_proto("10.0.0.9", 8080))
    event.source_meta.labels["tls"] = "true"
    getattr(event.http, kind).MergeFrom(
        getattr(TapEvent.Http, "".join(p.title() for p in kind.split("_")))(**fields)
    )
    return event


StreamId = TapEvent.Http.StreamId


def _duration(micros: int) -> Any:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def test_lines_are_linkerds() -> None:
    req = _event(
        "request_init",
        id=StreamId(base=3, stream=1),
        method=http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.GET),
        authority="web.demo:8080",
        path="/books",
    )
    flow = "proxy=in  src=10.0.0.5:41000 dst=10.0.0.9:8080 tls=true"
    assert (
        render_line(req) == f"req id=3:1 {flow} :method=GET :authority=web.demo:8080 :path=/books"
    )
    rsp = _event(
        "response_init",
        id=StreamId(base=3, stream=1),
        http_status=200,
        since_request_init=_duration(1234),
    )
    assert render_line(rsp) == f"rsp id=3:1 {flow} :status=200 latency=1234µs"
    end = _event(
        "response_end",
        id=StreamId(base=3, stream=1),
        since_response_init=_duration(56),
        response_bytes=5,
        eos=tap_pb2.Eos(grpc_status_code=14),
    )
    assert render_line(end) == (
        f"end id=3:1 {flow} grpc-status=Unavailable duration=56µs response-length=5B"
    )
    pods = {"10.0.0.5": PodInfo("demo", "traffic-1", "deploy/traffic")}
    assert render_line(end, wide=True, pods=pods).endswith(  # type: ignore[union-attr]
        " src_res=deploy/traffic src_ns=demo"
    )
    body = json.loads(render_json(req, pods=pods))
    assert body["source"] == "10.0.0.5:41000"
    assert body["source_resource"]["pod"] == "traffic-1"
    assert body["http"]["request_init"]["path"] == "/books"


def test_top_counts_finished_requests_per_path() -> None:
    pods = {"10.0.0.5": PodInfo("demo", "traffic-1", "deploy/traffic")}
    table = TopTable(pods=pods)
    get = http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.GET)
    for stream, (status, latency) in enumerate([(200, 1500), (500, 800), (200, 3000)], 1):
        sid = StreamId(base=1, stream=stream)
        table.add(_event("request_init", id=sid, method=get, path="/books"), "p")
        table.add(
            _event(
                "response_init", id=sid, http_status=status, since_request_init=_duration(latency)
            ),
            "p",
        )
        table.add(_event("response_end", id=sid), "p")
    # A request without its end is not counted; the same ids from another proxy are another.
    table.add(_event("request_init", id=StreamId(base=1, stream=9), method=get, path="/x"), "p")
    lines = table.render().splitlines()
    assert lines[0].split()[:4] == ["Source", "Destination", "Method", "Path"]
    assert lines[1].split() == [
        "traffic-1", "10.0.0.9", "GET", "/books", "3", "800µs", "3ms", "3ms", "66.67%",
    ]  # fmt: skip
    assert len(lines) == 2


def test_max_rps_becomes_each_pods_limit_per_second() -> None:
    assert per_call_limit(100, 4) == 25
    assert per_call_limit(1, 4) == 1  # every pod still shows something
    assert per_call_limit(0, 4) > 1_000_000  # no limit


def test_pods_are_named_by_address_with_their_owning_resource() -> None:
    from gossamer_cli.viz.tap_render import pods_by_address

    web = {
        "metadata": {
            "name": "web-5d9f-abcde",
            "namespace": "demo",
            "labels": {"pod-template-hash": "5d9f"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d9f", "controller": True}],
        },
        "status": {"podIP": "10.0.0.5"},
    }
    lone = {"metadata": {"name": "debug", "namespace": "demo"}, "status": {"podIP": "10.0.0.6"}}
    pending = {"metadata": {"name": "new", "namespace": "demo"}, "status": {}}
    nameless: dict[str, Any] = {"metadata": {}, "status": {"podIP": "10.0.0.7"}}
    assert pods_by_address([web, lone, pending, nameless]) == {
        "10.0.0.5": PodInfo("demo", "web-5d9f-abcde", "deploy/web"),
        "10.0.0.6": PodInfo("demo", "debug", "pod/debug"),
    }
