"""The real node's teardown helpers that need no node (gossamer_kube.realnode.node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gossamer_kube.realnode import node


def test_cgroup_tree_is_deepest_first_and_tolerates_vanishing_cgroups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "gossamer-node"
    (top / "kubepods" / "besteffort" / "pod1" / "ctr").mkdir(parents=True)
    (top / "kubepods" / "burstable").mkdir()
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        # runc removes an exited container's cgroup while node-down walks the tree
        if Path(path).name == "pod1":
            raise FileNotFoundError(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    tree = node._cgroup_tree(top)
    assert tree[-1] == top
    depths = [len(p.parts) for p in tree]
    assert depths == sorted(depths, reverse=True)
    assert top / "kubepods" / "burstable" in tree
    assert node._cgroup_tree(tmp_path / "missing") == []


def test_only_cni_netns_files_made_since_node_up_are_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netns = tmp_path / "netns"
    netns.mkdir()
    old, ours = netns / "cni-old", netns / "cni-new"
    for path in (old, ours, netns / "other-ns"):
        path.write_text("")
    os.utime(old, (1000.0, 1000.0))
    monkeypatch.setattr(node, "_cni_netns_files", lambda: sorted(netns.glob("cni-*")))
    state = {"started": 2000.0, "cni_netns_before": []}
    assert node._our_cni_netns(state) == [str(ours)]
    state["cni_netns_before"] = ["cni-new"]
    assert node._our_cni_netns(state) == []
