"""Route matching (HTTPRoute precedence, ServiceProfiles), classification and traffic split."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import Counter

import pytest
from google.protobuf.duration_pb2 import Duration
from gossamer_api.addresses import tcp_address_to_proto
from gossamer_api.proxy import destination_pb2, http_route_pb2, http_types_pb2
from gossamer_proxy.mesh.classify import (
    Classification,
    classify_for_accrual,
    classify_for_metrics,
    grpc_status,
    is_grpc,
)
from gossamer_proxy.mesh.profile import ProfileError, compile_profile
from gossamer_proxy.mesh.request import RequestView, split_host_port
from gossamer_proxy.mesh.routes import (
    HttpRoute,
    RouteError,
    RouteRule,
    compile_host_match,
    compile_route_match,
    find_route,
)
from gossamer_proxy.mesh.split import WeightedSplit

GET = http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.GET)
POST = http_types_pb2.HttpMethod(registered=http_types_pb2.HttpMethod.POST)


def req(target: str, method: str = "GET", host: str = "web.ns.svc", **headers: str) -> RequestView:
    return RequestView.from_target(
        method,
        target,
        authority=host,
        headers=[(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    )


def route(name: str, *matches: http_route_pb2.HttpRouteMatch, hosts: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    host_matches = []
    for h in hosts:
        if h.startswith("*."):
            labels = h[2:].split(".")[::-1]
            host_matches.append(
                compile_host_match(
                    http_route_pb2.HostMatch(
                        suffix=http_route_pb2.HostMatch.Suffix(reverse_labels=labels)
                    )
                )
            )
        else:
            host_matches.append(compile_host_match(http_route_pb2.HostMatch(exact=h)))
    return HttpRoute(
        tuple(host_matches), (RouteRule(tuple(compile_route_match(m) for m in matches), name),)
    )


def path(kind: str, value: str) -> http_route_pb2.HttpRouteMatch:
    return http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(**{kind: value}))


def chosen(routes: list[HttpRoute[str]], request: RequestView) -> str | None:
    found = find_route(routes, request)
    return None if found is None else found[1].action


def test_request_view_parses_targets_and_authorities() -> None:
    view = RequestView.from_target(b"get", b"http://Web.ns:8080/a/b?x=1&x=2", headers=[])
    assert (view.method, view.path, view.query, view.host) == ("GET", "/a/b", "x=1&x=2", "web.ns")
    assert view.query_values("x") == ["1", "2"]
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port("web.ns.svc.cluster.local.") == ("web.ns.svc.cluster.local", None)


def test_huge_authorities_are_not_memoized() -> None:
    """Clients choose the authorities: a few hundred huge Hosts must not pin their bytes.

    A Host may carry ~64 KiB (the head limit); the memo behind ``split_host_port`` keeps
    1024 entries, so memoizing such authorities would retain ~130 MB.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(64):
            authority = f"a{i:05d}" + "b" * 65_000 + ":80"
            assert RequestView(method="GET", path="/", authority=authority).host == authority[:-3]
            assert split_host_port(authority.upper())[1] == 80
            del authority
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 1_000_000, retained  # memoized: 64 * 2 * 2 * 65 kB = 16.6 MB
    assert RequestView(method="GET", path="/", authority="Web.NS:8080").host == "web.ns"


def test_prefix_matches_whole_segments() -> None:
    routes = [route("foo", path("prefix", "/foo"))]
    assert chosen(routes, req("/foo")) == "foo"
    assert chosen(routes, req("/foo/bar")) == "foo"
    assert chosen(routes, req("/foobar")) is None
    assert chosen([route("root", path("prefix", "/"))], req("/anything")) == "root"


def test_precedence_exact_over_regex_over_longer_prefix() -> None:
    routes = [
        route("prefix", path("prefix", "/api")),
        route("longer-prefix", path("prefix", "/api/v1")),
        route("regex", path("regex", "/api/v1/[a-z]+")),
        route("exact", path("exact", "/api/v1/users")),
    ]
    assert chosen(routes, req("/api/v1/users")) == "exact"
    assert chosen(routes, req("/api/v1/items")) == "regex"
    assert chosen(routes, req("/api/v1/42")) == "longer-prefix"
    assert chosen(routes, req("/api/v2")) == "prefix"


def test_regex_is_anchored() -> None:
    routes = [route("r", path("regex", "/a.c"))]
    assert chosen(routes, req("/abc")) == "r"
    assert chosen(routes, req("/abcd")) is None
    assert chosen(routes, req("/x/abc")) is None


def test_method_headers_and_query_params_add_specificity() -> None:
    canary = http_route_pb2.HttpRouteMatch(
        path=http_route_pb2.PathMatch(prefix="/"),
        headers=[http_route_pb2.HeaderMatch(name="X-Canary", exact=b"true")],
    )
    by_query = http_route_pb2.HttpRouteMatch(
        path=http_route_pb2.PathMatch(prefix="/"),
        query_params=[http_route_pb2.QueryParamMatch(name="v", regex="2|3")],
    )
    posts = http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(prefix="/"), method=POST)
    routes = [
        route("default", path("prefix", "/")),
        route("query", by_query),
        route("canary", canary),
        route("posts", posts),
    ]
    assert chosen(routes, req("/")) == "default"
    assert chosen(routes, req("/", x_canary="true")) == "canary"
    assert chosen(routes, req("/", x_canary="false")) == "default"
    assert chosen(routes, req("/?v=3")) == "query"
    assert chosen(routes, req("/?v=4")) == "default"
    assert chosen(routes, req("/", method="POST", x_canary="true")) == "posts"


def test_header_regex_matches_any_value() -> None:
    m = http_route_pb2.HttpRouteMatch(
        headers=[http_route_pb2.HeaderMatch(name="user", regex="(alice|bob)")]
    )
    routes = [route("ab", m)]
    assert chosen(routes, req("/", user="carol")) is None
    view = RequestView.from_target("GET", "/", headers=[(b"user", b"carol"), (b"User", b"bob")])
    assert chosen(routes, view) == "ab"


def test_hosts_exact_beats_wildcard_beats_any() -> None:
    routes = [
        route("any", path("prefix", "/")),
        route("wild", path("prefix", "/"), hosts=("*.example.com",)),
        route("exact", path("prefix", "/"), hosts=("api.example.com",)),
    ]
    assert chosen(routes, req("/", host="api.example.com:8080")) == "exact"
    assert chosen(routes, req("/", host="www.example.com")) == "wild"
    assert chosen(routes, req("/", host="example.com")) == "any"
    assert chosen(routes[1:], req("/", host="other.org")) is None


def test_ties_go_to_the_first_route() -> None:
    routes = [route("older", path("prefix", "/a")), route("newer", path("prefix", "/a"))]
    assert chosen(routes, req("/a")) == "older"


def test_bad_route_input_is_a_route_error() -> None:
    with pytest.raises(RouteError, match="regex"):
        compile_route_match(path("regex", "(unclosed"))
    with pytest.raises(RouteError, match="no kind"):
        compile_route_match(http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch()))
    with pytest.raises(RouteError, match="no value"):
        compile_route_match(
            http_route_pb2.HttpRouteMatch(headers=[http_route_pb2.HeaderMatch(name="x")])
        )
    with pytest.raises(RouteError, match="neither"):
        compile_host_match(http_route_pb2.HostMatch())


def profile_message() -> destination_pb2.DestinationProfile:
    get_books = destination_pb2.RequestMatch(
        all=destination_pb2.RequestMatch.Seq(
            matches=[
                destination_pb2.RequestMatch(method=GET),
                destination_pb2.RequestMatch(path=destination_pb2.PathMatch(regex="/books/\\d+")),
            ]
        )
    )
    not_get = destination_pb2.RequestMatch(
        **{"not": destination_pb2.RequestMatch(method=GET)}  # type: ignore[arg-type]
    )
    return destination_pb2.DestinationProfile(
        fully_qualified_name="books.ns.svc.cluster.local",
        retry_budget=destination_pb2.RetryBudget(
            retry_ratio=0.2, min_retries_per_second=10, ttl=Duration(seconds=10)
        ),
        routes=[
            destination_pb2.Route(
                condition=get_books,
                metrics_labels={"route": "GET /books/{id}"},
                is_retryable=True,
                timeout=Duration(nanos=250_000_000),
                response_classes=[
                    destination_pb2.ResponseClass(
                        condition=destination_pb2.ResponseMatch(
                            status=destination_pb2.HttpStatusRange(min=404, max=404)
                        ),
                        is_failure=True,
                    ),
                    destination_pb2.ResponseClass(
                        condition=destination_pb2.ResponseMatch(
                            status=destination_pb2.HttpStatusRange(min=500, max=599)
                        ),
                        is_failure=False,
                    ),
                ],
            ),
            destination_pb2.Route(condition=not_get, metrics_labels={"route": "writes"}),
        ],
        dst_overrides=[
            destination_pb2.WeightedDst(authority="books-v1.ns.svc.cluster.local:80", weight=9000),
            destination_pb2.WeightedDst(authority="books-v2.ns.svc.cluster.local:80", weight=1000),
        ],
    )


def test_profile_routes_first_match_wins_with_anchored_regex() -> None:
    profile = compile_profile(profile_message())
    assert profile.overrides_policy
    books = profile.route_for(req("/books/12"))
    assert books is not None
    assert books.metric_labels == {"rt_route": "GET /books/{id}"}
    assert books.timeout == pytest.approx(0.25)
    assert profile.may_retry(books)
    assert profile.route_for(req("/books/12/reviews")) is None  # anchored
    writes = profile.route_for(req("/books/12", method="POST"))
    assert writes is not None
    assert not profile.may_retry(writes)


def test_profile_response_classes_override_default() -> None:
    route = compile_profile(profile_message()).routes[0]
    assert route.classify(404) is Classification.FAILURE
    assert route.classify(503) is Classification.SUCCESS
    assert route.classify(200) is Classification.SUCCESS
    assert route.classify(None) is Classification.FAILURE
    assert compile_profile(profile_message()).routes[1].classify(500) is Classification.FAILURE


def test_profile_without_fqn_does_not_override_policy_and_budget_is_needed() -> None:
    message = profile_message()
    message.fully_qualified_name = ""
    assert not compile_profile(message).overrides_policy
    message = profile_message()
    message.ClearField("retry_budget")
    profile = compile_profile(message)
    assert not profile.may_retry(profile.routes[0])


def test_profile_endpoint_and_opaque() -> None:
    message = destination_pb2.DestinationProfile(
        opaque_protocol=True,
        endpoint=destination_pb2.WeightedAddr(
            addr=tcp_address_to_proto("10.1.2.3", 3306), weight=10000
        ),
    )
    profile = compile_profile(message)
    assert profile.opaque_protocol
    assert profile.endpoint is not None
    assert str(profile.endpoint.ip) == "10.1.2.3"


def test_bad_profiles_raise_profile_error() -> None:
    message = profile_message()
    message.routes[0].condition.all.matches[1].path.regex = "([bad"
    with pytest.raises(ProfileError, match="regex"):
        compile_profile(message)
    empty_condition = destination_pb2.DestinationProfile(
        routes=[destination_pb2.Route(condition=destination_pb2.RequestMatch())]
    )
    with pytest.raises(ProfileError, match="no condition"):
        compile_profile(empty_condition)
    bad_status = profile_message()
    bad_status.routes[0].response_classes[0].condition.status.min = 700
    with pytest.raises(ProfileError, match="status range"):
        compile_profile(bad_status)


def test_dst_override_split_follows_weights() -> None:
    split = compile_profile(profile_message()).dst_overrides
    assert split.share("books-v2.ns.svc.cluster.local:80") == pytest.approx(0.1)
    rng = random.Random(1)
    counts = Counter(split.choose(rng) for _ in range(2000))
    assert 1600 < counts["books-v1.ns.svc.cluster.local:80"] < 2000
    assert counts["books-v2.ns.svc.cluster.local:80"] > 100


def test_weighted_split_edges() -> None:
    assert WeightedSplit([("a", 0), ("b", 0)]).choose(random.Random()) is None
    assert WeightedSplit([("a", 0), ("b", 5)]).choose(random.Random()) == "b"

    class Top:
        def random(self) -> float:
            return 0.9999999

    assert WeightedSplit([("a", 1), ("b", 1)]).choose(Top()) == "b"
    with pytest.raises(ValueError, match="negative"):
        WeightedSplit([("a", -1)])


def test_classification_rules() -> None:
    assert classify_for_metrics(503) is Classification.FAILURE
    assert classify_for_metrics(404) is Classification.SUCCESS
    assert classify_for_metrics(200, grpc=5) is Classification.FAILURE
    assert classify_for_accrual(200, grpc=5) is Classification.SUCCESS  # NOT_FOUND
    for code in (2, 4, 7, 13, 14, 15):
        assert classify_for_accrual(200, grpc=code) is Classification.FAILURE
    assert classify_for_accrual(200, error=True) is Classification.FAILURE
    headers = [(b"content-type", b"application/grpc+proto"), (b"grpc-status", b"14")]
    assert is_grpc(headers)
    assert grpc_status(headers) == 14
    assert grpc_status([(b"grpc-status", b"garbage")]) == 2
    assert grpc_status([]) is None


# -- linear-time regexes (issue 16) ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_pathological_route_regex_cannot_stall_matching() -> None:
    routes = [route("r", path("regex", "/(a+)+$"))]
    assert chosen(routes, req("/" + "a" * 50_000 + "!")) is None
    header_route = http_route_pb2.HttpRouteMatch(
        headers=[http_route_pb2.HeaderMatch(name="x", regex="(x|x)*y")]
    )
    compiled = compile_route_match(header_route)
    assert compiled.rank(req("/", x="x" * 50_000)) is None


@pytest.mark.parametrize("regex", [r"/(a)\1", r"/(?=a)a", r"/a++", "/(unclosed"])
def test_route_regex_needing_backtracking_is_a_route_error(regex: str) -> None:
    with pytest.raises(RouteError, match="invalid path regex"):
        compile_route_match(
            http_route_pb2.HttpRouteMatch(path=http_route_pb2.PathMatch(regex=regex))
        )
    with pytest.raises(RouteError, match="invalid header regex"):
        compile_route_match(
            http_route_pb2.HttpRouteMatch(
                headers=[http_route_pb2.HeaderMatch(name="h", regex=regex)]
            )
        )
    profile_route = destination_pb2.RequestMatch(path=destination_pb2.PathMatch(regex=regex))
    with pytest.raises(ProfileError, match="invalid path regex"):
        compile_profile(
            destination_pb2.DestinationProfile(
                routes=[destination_pb2.Route(condition=profile_route)]
            )
        )
