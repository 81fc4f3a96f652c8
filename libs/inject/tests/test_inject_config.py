from __future__ import annotations

import pytest
from gossamer_inject import ConfigError, MeshValues, resolve
from gossamer_inject.containers import PodFacts, init_container, proxy_env

MESH = MeshValues(trust_anchors_pem="pem")


def test_defaults_follow_the_reference() -> None:
    cfg = resolve(MESH, {}, ingress=False)
    assert (cfg.inbound_port, cfg.outbound_port, cfg.admin_port, cfg.control_port) == (
        4143,
        4140,
        4191,
        4190,
    )
    assert cfg.proxy_uid == 2102
    assert cfg.native_sidecar is True
    assert cfg.iptables_mode == "nft"
    assert cfg.proxy_image == "gossamer/proxy"
    assert MESH.identity_svc_addr == "gossamer-identity.gossamer.svc.cluster.local:8080"
    assert MESH.destination_svc_addr == "gossamer-dst.gossamer.svc.cluster.local:8086"
    assert MESH.policy_svc_addr == "gossamer-dst.gossamer.svc.cluster.local:8090"
    assert (
        MESH.identity_svc_name
        == "gossamer-identity.gossamer.serviceaccount.identity.gossamer.cluster.local"
    )


def test_overrides_take_effect() -> None:
    cfg = resolve(
        MESH,
        {
            "config.linkerd.io/proxy-uid": "3000",
            "config.linkerd.io/admin-port": "9999",
            "config.linkerd.io/proxy-cpu-limit": "2500m",
            "config.linkerd.io/proxy-memory-request": "20Mi",
            "config.linkerd.io/proxy-log-level": "debug",
            "config.linkerd.io/proxy-outbound-connect-timeout": "2s",
            "config.linkerd.io/skip-inbound-ports": "8443",
            "config.linkerd.io/proxy-enable-native-sidecar": "false",
            "config.linkerd.io/default-inbound-policy": "deny",
            "config.linkerd.io/proxy-image": "registry.example/proxy",
            "config.linkerd.io/proxy-version": "dev-1",
        },
        ingress=True,
    )
    assert cfg.proxy_uid == 3000
    assert cfg.admin_port == 9999
    assert cfg.resources.cores == 3
    assert cfg.resources.as_dict() == {"limits": {"cpu": "2500m"}, "requests": {"memory": "20Mi"}}
    assert cfg.log_level == "debug"
    assert cfg.outbound_connect_timeout == "2s"
    assert str(cfg.skip_inbound_ports[0]) == "8443"
    assert cfg.native_sidecar is False
    assert cfg.default_inbound_policy == "deny"
    assert (cfg.proxy_image, cfg.proxy_version, cfg.ingress) == (
        "registry.example/proxy",
        "dev-1",
        True,
    )


def test_ga_native_sidecar_annotation_beats_deprecated_alpha() -> None:
    cfg = resolve(
        MESH,
        {
            "config.alpha.linkerd.io/proxy-enable-native-sidecar": "false",
            "config.linkerd.io/proxy-enable-native-sidecar": "true",
        },
        ingress=False,
    )
    assert cfg.native_sidecar is True
    off = MeshValues(native_sidecar=False)
    alpha = {"config.alpha.linkerd.io/proxy-enable-native-sidecar": "true"}
    assert resolve(off, alpha, ingress=False).native_sidecar is True


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("config.linkerd.io/admin-port", "http", "not a port"),
        ("config.linkerd.io/inbound-port", "70000", "out of range"),
        ("config.linkerd.io/proxy-cpu-limit", "lots", "quantity"),
        ("config.linkerd.io/proxy-memory-request", "64MB", "quantity"),
        ("config.linkerd.io/proxy-uid", "root", "integer"),
        ("config.linkerd.io/proxy-uid", "0", "between"),
        ("config.linkerd.io/image-pull-policy", "Sometimes", "IfNotPresent"),
        ("config.linkerd.io/default-inbound-policy", "allow", "expected one of"),
        ("config.linkerd.io/proxy-log-format", "xml", "plain or json"),
        ("config.linkerd.io/access-log", "csv", "apache or json"),
        ("config.linkerd.io/proxy-await", "perhaps", "true or false"),
        ("config.linkerd.io/skip-subnets", "10.0.0.1/8", "CIDR"),
        ("config.linkerd.io/skip-outbound-ports", "9000-8000", "backwards"),
        ("config.linkerd.io/opaque-ports", "25,!", "not a port"),
        ("config.linkerd.io/proxy-outbound-connect-timeout", "soon", "duration"),
        ("config.linkerd.io/proxy-additional-env", "{not json", "not JSON"),
        ("config.linkerd.io/proxy-additional-env", '{"name": "X"}', "JSON list"),
        ("config.linkerd.io/proxy-additional-env", '[{"value": "1"}]', "name"),
        ("config.linkerd.io/proxy-cpu-ratio-limit", "2", "(0, 1]"),
        ("config.linkerd.io/proxy-version", "v1 beta", "tag"),
        ("config.linkerd.io/init-image-version", "v2:latest", "tag"),
        ("config.linkerd.io/init-image-version", "", "tag"),
        ("config.linkerd.io/proxy-image", "img@sha256:abc", "image"),
        ("config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "-3", "between"),
    ],
)
def test_bad_values_are_rejected_with_the_key(key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(MESH, {key: value}, ingress=False)
    assert info.value.key == key or key.endswith(info.value.key)
    assert needle in str(info.value)


def test_request_above_limit_is_rejected() -> None:
    with pytest.raises(ConfigError, match="exceeds the limit"):
        resolve(
            MESH,
            {
                "config.linkerd.io/proxy-memory-request": "256Mi",
                "config.linkerd.io/proxy-memory-limit": "128Mi",
            },
            ingress=False,
        )


def test_init_image_version_defaults_to_the_proxy_version() -> None:
    mesh = MeshValues(version="1.2.3")
    cfg = resolve(mesh, {}, ingress=False)
    assert (cfg.proxy_version, cfg.init_version) == ("1.2.3", "1.2.3")
    assert init_container(cfg)["image"] == "gossamer/proxy-init:1.2.3"


def test_init_image_version_is_set_apart_by_install_and_by_annotation() -> None:
    mesh = MeshValues(version="1.2.3", init_version="1.2.3-init.1")
    cfg = resolve(mesh, {}, ingress=False)
    assert (cfg.proxy_version, cfg.init_version) == ("1.2.3", "1.2.3-init.1")
    assert init_container(cfg)["image"] == "gossamer/proxy-init:1.2.3-init.1"
    # A pod's proxy-version moves only the proxy; init-image-version moves only proxy-init.
    cfg = resolve(mesh, {"config.linkerd.io/proxy-version": "dev-1"}, ingress=False)
    assert (cfg.proxy_version, cfg.init_version) == ("dev-1", "1.2.3-init.1")
    pod = {
        "config.linkerd.io/init-image": "registry.example/init",
        "config.linkerd.io/init-image-version": "hotfix_2",
    }
    cfg = resolve(mesh, pod, ingress=False)
    assert (cfg.proxy_version, cfg.init_version) == ("1.2.3", "hotfix_2")
    assert init_container(cfg)["image"] == "registry.example/init:hotfix_2"


def test_a_bad_install_init_version_names_the_override_key() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(MeshValues(init_version="a b"), {}, ingress=False)
    assert info.value.key == "config.linkerd.io/init-image-version"


def test_access_log_and_log_format_reach_the_proxy_env() -> None:
    facts = PodFacts(inbound_ports=(8080,), opaque_ports=())
    plain = {e["name"]: e.get("value") for e in proxy_env(resolve(MESH, {}, ingress=False), facts)}
    assert plain["LINKERD2_PROXY_LOG_FORMAT"] == "plain"
    assert "LINKERD2_PROXY_ACCESS_LOG" not in plain  # off unless asked for, as in Linkerd
    cfg = resolve(
        MESH,
        {"config.linkerd.io/access-log": "json", "config.linkerd.io/proxy-log-format": "json"},
        ingress=False,
    )
    env = {e["name"]: e.get("value") for e in proxy_env(cfg, facts)}
    assert env["LINKERD2_PROXY_ACCESS_LOG"] == "json"
    assert env["LINKERD2_PROXY_LOG_FORMAT"] == "json"


def test_tap_service_name_reaches_the_proxy_env_only_when_set() -> None:
    facts = PodFacts(inbound_ports=(8080,), opaque_ports=())
    plain = {e["name"]: e.get("value") for e in proxy_env(resolve(MESH, {}, ingress=False), facts)}
    assert "LINKERD2_PROXY_TAP_SVC_NAME" not in plain  # tap off without the viz tap service
    assert plain["LINKERD2_PROXY_CONTROL_LISTEN_ADDR"] == "0.0.0.0:4190"
    tap = "tap.gossamer-viz.serviceaccount.identity.gossamer.cluster.local"
    mesh = MeshValues(tap_svc_name=tap)
    env = {e["name"]: e.get("value") for e in proxy_env(resolve(mesh, {}, ingress=False), facts)}
    assert env["LINKERD2_PROXY_TAP_SVC_NAME"] == tap
