"""The informer's store: indexing, resourceVersion de-duplication and relist diffs."""

from __future__ import annotations

from typing import Any

from gossamer_kube.store import EventKind, Store


def obj(name: str, rv: str, ns: str = "default", ip: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}}
    if ip is not None:
        o["status"] = {"podIP": ip}
    return o


def by_ip(o: dict[str, Any]) -> list[str]:
    ip = (o.get("status") or {}).get("podIP")
    return [ip] if ip else []


def test_upsert_reports_add_then_modify_and_skips_same_version() -> None:
    store = Store()
    first = store.upsert(obj("a", "1"))
    assert first is not None
    assert first.kind is EventKind.ADDED
    assert first.old is None
    assert store.upsert(obj("a", "1")) is None
    second = store.upsert(obj("a", "2"))
    assert second is not None
    assert second.kind is EventKind.MODIFIED
    assert second.old is not None
    assert second.old["metadata"]["resourceVersion"] == "1"


def test_delete_of_unknown_object_is_ignored() -> None:
    store = Store()
    assert store.delete(obj("nope", "1")) is None


def test_index_follows_updates_and_deletes() -> None:
    store = Store({"ip": by_ip})
    store.upsert(obj("a", "1", ip="10.0.0.1"))
    store.upsert(obj("b", "1", ip="10.0.0.1"))
    assert {o["metadata"]["name"] for o in store.by_index("ip", "10.0.0.1")} == {"a", "b"}
    store.upsert(obj("a", "2", ip="10.0.0.2"))
    assert [o["metadata"]["name"] for o in store.by_index("ip", "10.0.0.1")] == ["b"]
    store.delete(obj("b", "1"))
    assert store.by_index("ip", "10.0.0.1") == []
    assert "10.0.0.1" not in store.index_values("ip")


def test_replace_yields_the_missing_adds_updates_and_deletes() -> None:
    store = Store()
    store.replace([obj("keep", "1"), obj("change", "1"), obj("gone", "1")])
    events = store.replace([obj("keep", "1"), obj("change", "2"), obj("new", "1")])
    seen = {(e.kind, e.obj["metadata"]["name"]) for e in events}
    assert seen == {
        (EventKind.DELETED, "gone"),
        (EventKind.MODIFIED, "change"),
        (EventKind.ADDED, "new"),
    }
    assert sorted(o["metadata"]["name"] for o in store) == ["change", "keep", "new"]


def test_list_by_namespace_and_late_indexer() -> None:
    store = Store()
    store.upsert(obj("a", "1", ns="x", ip="10.0.0.9"))
    store.upsert(obj("b", "1", ns="y"))
    assert [o["metadata"]["name"] for o in store.objects("x")] == ["a"]
    store.add_indexer("ip", by_ip)
    assert [o["metadata"]["name"] for o in store.by_index("ip", "10.0.0.9")] == ["a"]
