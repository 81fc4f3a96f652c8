"""``gossamer profile``: ServiceProfiles from a template, an OpenAPI spec and a .proto."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from gossamer_cli import profile_spec
from gossamer_cli.main import cli

SWAGGER = {
    "swagger": "2.0",
    "info": {"title": "books", "version": "1"},
    "basePath": "/api/",
    "paths": {
        "/books": {"get": {"responses": {}}, "post": {"x-linkerd-retryable": False}},
        "/books/{id}": {
            "get": {"x-linkerd-retryable": True, "x-linkerd-timeout": "500ms"},
            "delete": {},
            "parameters": [{"name": "id", "in": "path"}],
        },
        "/books/{id}/pages.json": {"put": {}},
    },
}

OPENAPI3 = """\
openapi: 3.0.0
info: {title: t, version: '1'}
paths:
  /users/{user}/orders:
    get: {}
    head: {}
"""

PROTO = """\
syntax = "proto3";
// service Commented { rpc Nope(A) returns (B); }
package emojivoto.v1;
import "google/protobuf/empty.proto";
option go_package = "x//y";  /* a "service" word in a comment */

service VotingService {
  rpc VoteDoughnut (VoteRequest) returns (VoteResponse);
  rpc Results (stream ResultsRequest) returns (stream ResultsResponse) {
    option (google.api.http) = { get: "/v1/results" };
  }
}

message VoteRequest { string id = 1; }

service EmojiService {
  rpc ListAll(ListAllEmojiRequest) returns (ListAllEmojiResponse) {}
  rpc Results(A) returns (B);
}
"""


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["profile", *args], input=stdin)
    return result.exit_code, result.output


def test_open_api_paths_and_methods_become_routes(tmp_path: Path) -> None:
    spec = tmp_path / "books.json"
    spec.write_text(json.dumps(SWAGGER))
    code, out = run("--open-api", str(spec), "books", "-n", "library")
    assert code == 0, out
    sp = yaml.safe_load(out)
    assert sp["apiVersion"] == "linkerd.io/v1alpha2"
    assert sp["kind"] == "ServiceProfile"
    assert sp["metadata"] == {"name": "books.library.svc.cluster.local", "namespace": "library"}
    routes = {r["name"]: r for r in sp["spec"]["routes"]}
    assert list(routes) == [
        "GET /api/books",
        "POST /api/books",
        "GET /api/books/{id}",
        "DELETE /api/books/{id}",
        "PUT /api/books/{id}/pages.json",
    ]
    by_id = routes["GET /api/books/{id}"]
    assert by_id["condition"] == {"method": "GET", "pathRegex": "/api/books/[^/]*"}
    assert by_id["isRetryable"] is True
    assert by_id["timeout"] == "500ms"
    pages = routes["PUT /api/books/{id}/pages.json"]["condition"]["pathRegex"]
    # Anchored by the mesh: the regex matches exactly the templated path.
    assert re.fullmatch(pages, "/api/books/42/pages.json")
    assert not re.fullmatch(pages, "/api/books/42/pagesXjson")
    assert not re.fullmatch(pages, "/api/books/4/2/pages.json")


def test_open_api_3_yaml_from_stdin() -> None:
    code, out = run("--open-api", "-", "shop", stdin=OPENAPI3)
    assert code == 0, out
    routes = yaml.safe_load(out)["spec"]["routes"]
    assert [r["name"] for r in routes] == ["GET /users/{user}/orders", "HEAD /users/{user}/orders"]
    assert routes[0]["condition"]["pathRegex"] == "/users/[^/]*/orders"
    assert yaml.safe_load(out)["metadata"]["namespace"] == "default"


def test_proto_services_become_post_routes(tmp_path: Path) -> None:
    proto = tmp_path / "emoji.proto"
    proto.write_text(PROTO)
    code, out = run("--proto", str(proto), "voting-svc", "-n", "emojivoto")
    assert code == 0, out
    routes = yaml.safe_load(out)["spec"]["routes"]
    assert [(r["name"], r["condition"]["method"]) for r in routes] == [
        ("VoteDoughnut", "POST"),
        ("emojivoto.v1.VotingService/Results", "POST"),
        ("ListAll", "POST"),
        ("emojivoto.v1.EmojiService/Results", "POST"),
    ]
    regex = routes[0]["condition"]["pathRegex"]
    assert regex == r"/emojivoto\.v1\.VotingService/VoteDoughnut"
    assert re.fullmatch(regex, "/emojivoto.v1.VotingService/VoteDoughnut")
    assert not re.fullmatch(regex, "/emojivotoXv1.VotingService/VoteDoughnut")


def test_proto_without_package() -> None:
    routes = profile_spec.parse_proto("service S { rpc M(A) returns (B); }", "x.proto")
    assert routes == [profile_spec.Route("M", "POST", "/S/M")]


def test_template_is_a_valid_commented_profile() -> None:
    code, out = run("--template", "web", "-n", "emojivoto")
    assert code == 0, out
    assert out.startswith("### ServiceProfile for web.emojivoto ###")
    assert "# A service profile lists routes" in out
    sp = yaml.safe_load(out)
    assert sp["metadata"]["name"] == "web.emojivoto.svc.cluster.local"
    (route,) = sp["spec"]["routes"]
    assert route["condition"] == {"pathRegex": r"/authors/\d+", "method": "POST"}
    assert sp["spec"]["retryBudget"]["retryRatio"] == 0.2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("web",), "give exactly one of --template, --open-api FILE or --proto FILE"),
        (("--template", "--proto", "x.proto", "web"), "(got --template, --proto)"),
        (("--template", "Web_1"), "'Web_1' is not a DNS-1035 label"),
        (("--template", "web", "-n", "Bad.NS"), "namespace 'Bad.NS' is not a DNS-1123 label"),
        (("--proto", "/nonexistent.proto", "web"), "no such file: /nonexistent.proto"),
    ],
)
def test_bad_arguments_are_refused_clearly(args: tuple[str, ...], message: str) -> None:
    code, out = run(*args)
    assert code != 0
    assert message in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "an OpenAPI document is a mapping, not list"),
        ("{a: [}", "neither JSON nor YAML"),
        ('{"info": {}, "paths": {}}', "no 'swagger' or 'openapi' field"),
        ('{"openapi": "3.0.0", "paths": []}', "'paths' must be a mapping"),
        ('{"openapi": "3.0.0", "paths": {"books": {"get": {}}}}', "path 'books' must start"),
        ('{"openapi": "3.0.0", "paths": {"/b/{id": {"get": {}}}}', "unbalanced braces"),
        ('{"openapi": "3.0.0", "paths": {"/b": {"parameters": []}}}', "no operations"),
        (
            '{"openapi": "3.0.0", "paths": {"/b": {"get": {"x-linkerd-timeout": "soon"}}}}',
            "x-linkerd-timeout 'soon' is not a duration",
        ),
        (
            '{"openapi": "3.0.0", "paths": {"/b": {"get": {"x-linkerd-retryable": "yes"}}}}',
            "x-linkerd-retryable must be true/false",
        ),
    ],
)
def test_bad_open_api_documents_say_what_is_wrong(text: str, message: str) -> None:
    code, out = run("--open-api", "-", "web", stdin=text)
    assert code == 1
    assert "<stdin>" in out
    assert message in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("message A { string a = 1; }", "no service definition"),
        ("service S { rpc M(A) returns (B); ", "service S: no closing brace"),
        ("service S { }", "service S has no rpc"),
        ("package a; package b; service S { rpc M(A) returns (B); }", "more than one package"),
        ("/* open service S { rpc M(A) returns (B); }", "unterminated /* comment"),
    ],
)
def test_bad_protos_say_what_is_wrong(text: str, message: str) -> None:
    code, out = run("--proto", "-", "web", stdin=text)
    assert code == 1
    assert message in out
