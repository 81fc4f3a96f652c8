"""Route filters (sans-io): compiling ``Filter`` protos and applying them to requests."""

from __future__ import annotations

import random

import pytest
from gossamer_api.proxy import grpc_route_pb2, http_route_pb2, http_types_pb2, outbound_pb2
from gossamer_proxy.mesh.outbound_policy import compile_outbound_policy
from gossamer_proxy.mesh.route_filters import (
    NO_FILTERS,
    RequestTarget,
    SyntheticResponse,
    compile_filters,
)

Filter = outbound_pb2.HttpRoute.Filter


class Fixed:
    """A ``random()`` source returning one value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def headers(*pairs: tuple[str, str]) -> http_types_pb2.Headers:
    return http_types_pb2.Headers(
        headers=[http_types_pb2.Headers.Header(name=n, value=v.encode()) for n, v in pairs]
    )


def modifier_filter(
    *,
    add: tuple[tuple[str, str], ...] = (),
    set_: tuple[tuple[str, str], ...] = (),
    remove: tuple[str, ...] = (),
) -> Filter:
    return Filter(
        request_header_modifier=http_route_pb2.RequestHeaderModifier(
            add=headers(*add), set=headers(*set_), remove=list(remove)
        )
    )


def redirect_filter(**fields: object) -> Filter:
    return Filter(redirect=http_route_pb2.RequestRedirect(**fields))  # type: ignore[arg-type]


REQUEST = [(b"host", b"web:80"), (b"x-a", b"1"), (b"X-Drop", b"gone"), (b"x-multi", b"a")]
TARGET = RequestTarget("http", "web.ns.svc:8080", "/api/v1/users", "page=2", "/api")


def test_no_filters_is_the_shared_empty_value() -> None:
    compiled = compile_filters([])
    assert compiled is NO_FILTERS
    assert compiled.empty
    assert compiled.apply_request(REQUEST, Fixed(0.5)) == REQUEST
    assert compiled.apply_response(REQUEST) == REQUEST


def test_request_header_modifier_adds_sets_and_removes() -> None:
    compiled = compile_filters(
        [
            modifier_filter(
                add=(("x-multi", "b"), ("x-new", "n")),
                set_=(("X-A", "2"),),
                remove=("x-drop",),
            )
        ]
    )
    assert not compiled.empty
    out = compiled.apply_request(REQUEST, Fixed(0.5))
    assert out == [
        (b"host", b"web:80"),
        (b"x-multi", b"a"),
        (b"x-multi", b"b"),
        (b"x-new", b"n"),
        (b"x-a", b"2"),
    ]
    assert REQUEST[1] == (b"x-a", b"1")  # the input is not modified


def test_response_header_modifier_applies_to_responses_only() -> None:
    message = Filter(
        response_header_modifier=http_route_pb2.ResponseHeaderModifier(
            set=headers(("cache-control", "no-store")), remove=["server"]
        )
    )
    compiled = compile_filters([message])
    response = [(b"server", b"x"), (b"Cache-Control", b"max-age=9"), (b"etag", b"1")]
    assert compiled.apply_response(response) == [(b"etag", b"1"), (b"cache-control", b"no-store")]
    assert compiled.apply_request(REQUEST, Fixed(0.5)) == REQUEST


@pytest.mark.parametrize(
    ("fields", "location", "status"),
    [
        ({}, b"http://web.ns.svc:8080/api/v1/users?page=2", 302),
        (
            {"host": "other.example", "status": 301},
            b"http://other.example:8080/api/v1/users?page=2",
            301,
        ),
        (
            {"scheme": http_types_pb2.Scheme(registered=http_types_pb2.Scheme.HTTPS)},
            b"https://web.ns.svc/api/v1/users?page=2",
            302,
        ),
        ({"port": 80}, b"http://web.ns.svc/api/v1/users?page=2", 302),
        ({"port": 9090}, b"http://web.ns.svc:9090/api/v1/users?page=2", 302),
        (
            {"path": http_route_pb2.PathModifier(full="/moved")},
            b"http://web.ns.svc:8080/moved?page=2",
            302,
        ),
        (
            {"path": http_route_pb2.PathModifier(prefix="/v2")},
            b"http://web.ns.svc:8080/v2/v1/users?page=2",
            302,
        ),
        (
            {"path": http_route_pb2.PathModifier(prefix="/")},
            b"http://web.ns.svc:8080/v1/users?page=2",
            302,
        ),
    ],
)
def test_redirect_builds_the_location(
    fields: dict[str, object], location: bytes, status: int
) -> None:
    compiled = compile_filters([redirect_filter(**fields)])
    answer = compiled.apply_request(REQUEST, Fixed(0.5), TARGET)
    assert answer == SyntheticResponse(status, ((b"location", location),))


def test_prefix_redirect_without_a_prefix_match_answers_500() -> None:
    compiled = compile_filters([redirect_filter(path=http_route_pb2.PathModifier(prefix="/v2"))])
    exact = RequestTarget("http", "web", "/api", "", matched_prefix=None)
    answer = compiled.apply_request(REQUEST, Fixed(0.5), exact)
    assert isinstance(answer, SyntheticResponse)
    assert answer.status == 500
    assert b"needs a PathPrefix match" in dict(answer.headers)[b"l5d-proxy-error"]


def test_failure_injector_fires_by_ratio_with_the_injected_rng() -> None:
    message = Filter(
        failure_injector=http_route_pb2.HttpFailureInjector(
            status=503, message="chaos", ratio=http_route_pb2.Ratio(numerator=1, denominator=4)
        )
    )
    compiled = compile_filters([message])
    fired = compiled.apply_request(REQUEST, Fixed(0.2))
    assert fired == SyntheticResponse(503, ((b"l5d-proxy-error", b"chaos"),))
    assert compiled.apply_request(REQUEST, Fixed(0.3)) == REQUEST
    rng = random.Random(7)
    hits = sum(
        isinstance(compiled.apply_request(REQUEST, rng), SyntheticResponse) for _ in range(4000)
    )
    assert 800 <= hits <= 1200


def test_failure_injector_without_ratio_always_fires_and_defaults_to_500() -> None:
    compiled = compile_filters([Filter(failure_injector=http_route_pb2.HttpFailureInjector())])
    answer = compiled.apply_request(REQUEST, Fixed(0.999))
    assert answer == SyntheticResponse(500, ((b"l5d-proxy-error", b"injected failure"),))


def test_grpc_filters_answer_with_a_grpc_status() -> None:
    grpc_filter = outbound_pb2.GrpcRoute.Filter(
        failure_injector=grpc_route_pb2.GrpcFailureInjector(code=14, message="down")
    )
    modifier = outbound_pb2.GrpcRoute.Filter(
        request_header_modifier=http_route_pb2.RequestHeaderModifier(set=headers(("x-g", "1")))
    )
    compiled = compile_filters([modifier, grpc_filter], grpc=True)
    answer = compiled.apply_request(REQUEST, Fixed(0.5))
    assert isinstance(answer, SyntheticResponse)
    assert (answer.status, answer.grpc_status, answer.grpc_message) == (200, 14, "down")
    only_modifier = compile_filters([modifier], grpc=True)
    assert (b"x-g", b"1") in only_modifier.apply_request(REQUEST, Fixed(0.5))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Filter(), "unsupported filter 'with no kind'"),
        (modifier_filter(set_=(("bad name", "x"),)), "invalid header name 'bad name'"),
        (modifier_filter(add=(("content-length", "9"),)), "frames the connection"),
        (modifier_filter(set_=(("x-ok", "a\r\nb"),)), "contains CR, LF or NUL"),
        (redirect_filter(status=200), "status 200 is not a redirection"),
        (redirect_filter(port=70000), "invalid port 70000"),
        (redirect_filter(path=http_route_pb2.PathModifier(full="relative")), "invalid path"),
        (
            Filter(
                failure_injector=http_route_pb2.HttpFailureInjector(
                    ratio=http_route_pb2.Ratio(numerator=1, denominator=0)
                )
            ),
            "denominator must not be 0",
        ),
        (
            Filter(failure_injector=http_route_pb2.HttpFailureInjector(status=999)),
            "invalid HTTP status 999",
        ),
    ],
)
def test_invalid_filters_answer_500_with_a_clear_reason(message: Filter, reason: str) -> None:
    compiled = compile_filters([message])
    assert compiled.error is not None
    assert reason in compiled.error
    answer = compiled.apply_request(REQUEST, Fixed(0.5), TARGET)
    assert isinstance(answer, SyntheticResponse)
    assert answer.status == 500
    text = dict(answer.headers)[b"l5d-proxy-error"].decode()
    assert text.startswith("invalid route filter: ")
    assert reason in text


def test_invalid_grpc_filter_answers_internal() -> None:
    bad = outbound_pb2.GrpcRoute.Filter(
        failure_injector=grpc_route_pb2.GrpcFailureInjector(code=99)
    )
    answer = compile_filters([bad], grpc=True).apply_request(REQUEST, Fixed(0.5))
    assert isinstance(answer, SyntheticResponse)
    assert (answer.status, answer.grpc_status) == (200, 13)
    assert answer.grpc_message is not None
    assert "invalid gRPC status code 99" in answer.grpc_message


def _policy_with(rule: outbound_pb2.HttpRoute.Rule) -> outbound_pb2.OutboundPolicy:
    message = outbound_pb2.OutboundPolicy()
    route = message.protocol.http1.routes.add()
    route.metadata.resource.kind = "HTTPRoute"
    route.metadata.resource.name = "web"
    route.rules.append(rule)
    return message


def test_outbound_policy_compiles_rule_and_backend_filters_once() -> None:
    rule = outbound_pb2.HttpRoute.Rule()
    rule.matches.add().path.prefix = "/"
    rule.filters.append(modifier_filter(set_=(("x-route", "1"),)))
    entry = rule.backends.random_available.backends.add(weight=1)
    entry.backend.backend.balancer.discovery.dst.path = "web.ns.svc.cluster.local:80"
    entry.backend.filters.add().failure_injector.CopyFrom(
        http_route_pb2.HttpFailureInjector(status=500, message="Service not found web")
    )
    model = compile_outbound_policy(_policy_with(rule))
    action = model.http1_routes[0].rules[0].action
    assert action.filters.request_modifiers[0].set == ((b"x-route", b"1"),)
    (backend,) = action.ordered_backends
    assert backend.filters.apply_request([], Fixed(0.5)) == SyntheticResponse(
        500, ((b"l5d-proxy-error", b"Service not found web"),)
    )


def test_an_invalid_filter_keeps_the_policy_and_fails_only_its_route() -> None:
    rule = outbound_pb2.HttpRoute.Rule()
    rule.filters.append(redirect_filter(status=204))
    rule.backends.first_available.backends.add().backend.balancer.discovery.dst.path = "a:80"
    model = compile_outbound_policy(_policy_with(rule))  # does not raise
    action = model.http1_routes[0].rules[0].action
    assert action.filters.error == "redirect: status 204 is not a redirection (3xx)"
