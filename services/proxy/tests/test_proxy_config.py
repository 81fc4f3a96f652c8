"""Proxy settings from LINKERD2_PROXY_* variables."""

from __future__ import annotations

import logging

import pytest
from gossamer_common.log_filter import LogFilter
from gossamer_common.settings import SettingsError
from gossamer_inject.config import DEFAULT_LOG_LEVEL
from gossamer_proxy.config import DEFAULT_OPAQUE_PORTS, Endpoint, load_settings, parse_ports


def test_linkerd_defaults() -> None:
    s = load_settings({})
    assert s.inbound_listen == Endpoint("0.0.0.0", 4143)
    assert s.outbound_listeners == (Endpoint("127.0.0.1", 4140),)
    assert s.admin_listen == Endpoint("127.0.0.1", 4191)
    assert s.inbound_detect_timeout == 10.0
    assert s.outbound_connect_timeout == 1.0
    assert s.inbound_connect_timeout == pytest.approx(0.3)
    assert s.shutdown_grace_period == 120.0
    assert not s.shutdown_endpoint_enabled
    assert s.inbound_opaque_ports == parse_ports(DEFAULT_OPAQUE_PORTS)
    assert 3306 in s.outbound_opaque_ports


def test_injected_environment() -> None:
    s = load_settings(
        {
            "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": "0.0.0.0:4143",
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS": "127.0.0.1:4140,[::1]:4140",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "0.0.0.0:4191",
            "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT": "365d",
            "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT": "1000ms",
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": "25,3306,9000-9002",
            "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED": "true",
            "LINKERD2_PROXY_INBOUND_IPS": "10.1.2.3,fd00::3",
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "30s",
        }
    )
    assert s.outbound_listeners == (Endpoint("127.0.0.1", 4140), Endpoint("::1", 4140))
    assert s.admin_listen == Endpoint("0.0.0.0", 4191)
    assert s.inbound_detect_timeout == 365 * 86400
    assert s.outbound_connect_timeout == 1.0
    assert s.inbound_opaque_ports == frozenset({25, 3306, 9000, 9001, 9002})
    assert s.shutdown_endpoint_enabled
    assert s.inbound_ips == ("10.1.2.3", "fd00::3")
    assert s.shutdown_grace_period == 30.0


def test_single_outbound_address_form() -> None:
    s = load_settings({"LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": "127.0.0.1:5140"})
    assert s.outbound_listeners == (Endpoint("127.0.0.1", 5140),)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "4143"),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "ten seconds"),
        ("LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", "25,abc"),
        ("LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", "70000"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "maybe"),
        ("GOSSAMER_PROXY_HTTP1_MAX_HEAD_BYTES", "0"),
        ("LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES", "svc.cluster.local.,."),
        ("LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES", ".."),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_http1_limits_come_from_settings() -> None:
    s = load_settings(
        {
            "GOSSAMER_PROXY_HTTP1_MAX_HEAD_BYTES": "1024",
            "GOSSAMER_PROXY_HTTP1_HEAD_TIMEOUT": "2s",
            "GOSSAMER_PROXY_CLIENT_IDLE_TIMEOUT": "5s",
        }
    )
    assert s.http1.max_head_bytes == 1024
    assert s.http1.head_timeout == 2.0
    assert s.http1.idle_timeout == 5.0


def test_gateway_suffixes_skip_empty_entries() -> None:
    s = load_settings({"LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES": ",svc.cluster.local.,, "})
    assert s.inbound_gateway_suffixes == ("svc.cluster.local.",)
    assert load_settings({}).inbound_gateway_suffixes == ()


def test_the_injectors_default_log_filter_is_honoured_whole() -> None:
    """The proxy takes every directive of what the injector sets, span filters included."""
    parsed = LogFilter.parse(DEFAULT_LOG_LEVEL)
    assert parsed.level_for("gossamer.proxy.outbound") == logging.INFO
    assert parsed.default_level == logging.WARNING


@pytest.mark.parametrize(
    "workload",
    [
        '{"ns":"emojivoto", "pod":"web-0"}',
        '{"ns":"billing","external_workload":"vm-billing"}',
        "emojivoto:web-0",
    ],
)
def test_policy_workload_names_a_pod_or_an_external_workload(workload: str) -> None:
    s = load_settings({"LINKERD2_PROXY_POLICY_WORKLOAD": workload})
    assert s.policy_workload == workload


@pytest.mark.parametrize(
    "workload",
    [
        '{"ns":"billing"}',
        '{"ns":"billing","pod":"web-0","external_workload":"vm"}',
        '{"ns":"","external_workload":"vm"}',
        '{"ns":"billing","external_workload":""}',
        '{"ns":"billing","external_workload":7}',
        '{"ns":"billing",',
        '["billing","vm"]',
        "billing",
        '{"ns":"billing","external_workload":"' + "v" * 2000 + '"}',
    ],
)
def test_a_policy_workload_that_names_nothing_is_refused(workload: str) -> None:
    with pytest.raises(SettingsError, match="LINKERD2_PROXY_POLICY_WORKLOAD"):
        load_settings({"LINKERD2_PROXY_POLICY_WORKLOAD": workload})
