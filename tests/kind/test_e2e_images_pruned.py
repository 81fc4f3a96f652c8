"""make e2e on the real node leaves one run's images in buildah's storage, not one set per run.

Each run builds under a new tag (kubelet caches by tag) and skaffold adds its own inputDigest
tags, so without pruning a CI machine fills up (5.7 GB of old tags were seen).
scripts/prune-e2e-images.sh, which scripts/e2e-node.sh runs at the end of every run, removes
the images named ``localhost:5000/gossamer/*`` that do not carry the run's tag. Here it runs
against a throwaway buildah store (``CONTAINERS_STORAGE_CONF``) holding two "runs" that share
a layer and an image that is not make e2e's. Skipped on kind, which builds with Docker.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not os.environ.get("GOSSAMER_NODE_NETNS"), reason="needs the real node (scripts/e2e-node.sh)"
)

ROOT = Path(__file__).resolve().parents[2]
OWN = "localhost:5000/gossamer"


def _buildah(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        ["buildah", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout


def _build(env: dict[str, str], context: Path, steps: str, *tags: str) -> str:
    """An image FROM scratch with --layers (as scripts/images.sh builds); returns its id."""
    (context / "Dockerfile").write_text("FROM scratch\n" + steps)
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    out = _buildah(env, "bud", "--quiet", "--layers", "--force-rm", *tag_args, str(context)).split()
    return out[-1]


def test_prune_keeps_this_runs_images_and_their_shared_layers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{store / "graph"}"\nrunroot = "{store / "run"}"\n'
    )
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    context = tmp_path / "context"
    context.mkdir()
    (context / "shared").write_text("the dependency layer every run shares\n")
    shared_step = "COPY shared /shared\n"

    shared_layer = _build(env, context, shared_step)
    (context / "source").write_text("run 1\n")
    run1 = _build(env, context, shared_step + "COPY source /source\n", f"{OWN}/proxy:dev-1")
    (context / "source").write_text("run 2\n")
    run2 = _build(
        env, context, shared_step + "COPY source /source\n",
        f"{OWN}/proxy:dev-2", f"{OWN}/destination:dev-2",
    )  # fmt: skip
    # skaffold's inputDigest tag on this run's image, and an image make e2e did not make.
    _buildah(env, "tag", run2, f"{OWN}/proxy:5f0c1d2e3a4b")
    (context / "other").write_text("not make e2e's\n")
    other = _build(env, context, "COPY other /other\n", "localhost/someone-else:1")

    pruned = subprocess.run(
        ["bash", str(ROOT / "scripts/prune-e2e-images.sh"), "dev-2"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(pruned.stdout.split()) == [f"{OWN}/proxy:5f0c1d2e3a4b", f"{OWN}/proxy:dev-1"]

    names = _buildah(env, "images", "--format", "{{.Name}}:{{.Tag}}").split()
    assert sorted(names) == sorted(
        [f"{OWN}/destination:dev-2", f"{OWN}/proxy:dev-2", "localhost/someone-else:1"]
    )
    ids = {line[:12] for line in _buildah(env, "images", "-a", "--noheading", "--format",
                                          "{{.ID}}").split()}  # fmt: skip
    assert run1[:12] not in ids, "the earlier run's own layer is still stored"
    assert {run2[:12], other[:12], shared_layer[:12]} <= ids
    # The shared layer is still the cache: building its step again reuses it.
    assert _build(env, context, shared_step) == shared_layer

    again = subprocess.run(
        ["bash", str(ROOT / "scripts/prune-e2e-images.sh")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert _buildah(env, "images", "--format", "{{.Name}}:{{.Tag}}").split() == [
        "localhost/someone-else:1"
    ]
