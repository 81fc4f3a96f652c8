"""``--init-version`` / ``GOSSAMER_INJECTOR_INIT_VERSION``: proxy-init's own image tag."""

from __future__ import annotations

from pathlib import Path

import pytest
from gossamer_common.settings import SettingsError, load
from gossamer_inject import resolve
from gossamer_inject.containers import PodFacts, init_container, proxy_container
from gossamer_injector.settings import InjectorSettings


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    anchors = tmp_path / "ca.crt"
    anchors.write_text("pem")
    return {
        "GOSSAMER_INJECTOR_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "GOSSAMER_INJECTOR_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "GOSSAMER_INJECTOR_TRUST_ANCHORS_FILE": str(anchors),
        "GOSSAMER_INJECTOR_PROXY_VERSION": "1.4.0",
    }


def images(settings: InjectorSettings, annotations: dict[str, str] | None = None) -> list[str]:
    """The proxy and proxy-init images a pod injected with these settings gets."""
    cfg = resolve(settings.mesh_values("pem"), annotations or {}, ingress=False)
    proxy = proxy_container(cfg, PodFacts(inbound_ports=(8080,), opaque_ports=()))
    return [proxy["image"], init_container(cfg)["image"]]


def test_init_version_defaults_to_the_proxy_version(env: dict[str, str]) -> None:
    settings = load(InjectorSettings, [], env)
    assert settings.init_version is None
    assert images(settings) == ["gossamer/proxy:1.4.0", "gossamer/proxy-init:1.4.0"]
    # An empty value (a chart that leaves it blank) means the same.
    settings = load(InjectorSettings, [], {**env, "GOSSAMER_INJECTOR_INIT_VERSION": ""})
    assert images(settings) == ["gossamer/proxy:1.4.0", "gossamer/proxy-init:1.4.0"]


def test_init_version_from_env_and_flag(env: dict[str, str]) -> None:
    with_env = {**env, "GOSSAMER_INJECTOR_INIT_VERSION": "1.4.0-init.2"}
    settings = load(InjectorSettings, [], with_env)
    assert images(settings) == ["gossamer/proxy:1.4.0", "gossamer/proxy-init:1.4.0-init.2"]
    settings = load(InjectorSettings, ["--init-version", "hotfix_3"], with_env)
    assert images(settings) == ["gossamer/proxy:1.4.0", "gossamer/proxy-init:hotfix_3"]


def test_the_pod_annotation_beats_the_injector_setting(env: dict[str, str]) -> None:
    settings = load(InjectorSettings, ["--init-version=1.4.0-init.2"], env)
    pod = {"config.linkerd.io/init-image-version": "pinned-1"}
    assert images(settings, pod) == ["gossamer/proxy:1.4.0", "gossamer/proxy-init:pinned-1"]


@pytest.mark.parametrize("bad", ["v1:latest", "a b", "x" * 129, "img@sha256"])
def test_a_bad_init_version_is_refused_at_start_up(env: dict[str, str], bad: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(InjectorSettings, [], {**env, "GOSSAMER_INJECTOR_INIT_VERSION": bad})
    message = str(info.value)
    assert "GOSSAMER_INJECTOR_INIT_VERSION" in message
    assert "an image tag" in message
