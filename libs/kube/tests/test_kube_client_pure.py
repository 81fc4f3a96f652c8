"""The client's pure helpers: TokenReview results, bound pods, token-file reuse, argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from gossamer_kube.client import BoundPod, KubeClient, TokenReviewResult, _TokenSource
from gossamer_kube.config import KubeConfig
from gossamer_kube.errors import KubeConfigError
from gossamer_kube.resources import PODS


def test_token_review_result_from_status() -> None:
    res = TokenReviewResult.from_status(
        {
            "authenticated": True,
            "user": {
                "username": "system:serviceaccount:ns:sa",
                "uid": "u1",
                "groups": ["system:serviceaccounts"],
                "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
            },
            "audiences": ["identity.l5d.io"],
        }
    )
    assert res.authenticated
    assert res.username == "system:serviceaccount:ns:sa"
    assert res.audiences == ("identity.l5d.io",)
    assert res.extra["authentication.kubernetes.io/pod-name"] == ("p",)
    denied = TokenReviewResult.from_status({"error": "invalid bearer token"})
    assert not denied.authenticated
    assert denied.error == "invalid bearer token"


def test_bound_pod_of() -> None:
    assert BoundPod.of({"metadata": {"name": "p", "uid": "123"}}) == BoundPod("p", "123")
    with pytest.raises(ValueError, match=r"metadata\.name and metadata\.uid"):
        BoundPod.of({"metadata": {"name": "p"}})


def test_token_file_is_reread_after_ttl_and_survives_rotation_gaps(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("one\n")
    src = _TokenSource(KubeConfig(server="https://k:1", token_file=str(tok)))
    assert src.token(now=0.0) == "one"
    tok.write_text("two")
    assert src.token(now=30.0) == "one"
    assert src.token(now=61.0) == "two"
    tok.unlink()
    assert src.token(now=200.0) == "two"
    missing = _TokenSource(KubeConfig(server="https://k:1", token_file=str(tmp_path / "nope")))
    with pytest.raises(KubeConfigError, match="cannot read token file"):
        missing.token(now=0.0)


async def test_patch_shape_must_match_patch_type() -> None:
    async with KubeClient(KubeConfig(server="https://127.0.0.1:1")) as client:
        with pytest.raises(ValueError, match="json patch is a list"):
            await client.patch(PODS, "p", {"a": 1}, "ns", patch_type="json")
        with pytest.raises(ValueError, match="json patch is a list"):
            await client.patch(PODS, "p", [{"op": "add"}], "ns", patch_type="merge")
        with pytest.raises(ValueError, match="unknown patch type"):
            await client.patch(PODS, "p", {}, "ns", patch_type="apply")  # type: ignore[arg-type]
