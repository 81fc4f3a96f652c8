#!/usr/bin/env bash
# Removes from buildah's storage the images that make e2e on the real node made, except those
# tagged KEEP_TAG: every image named localhost:5000/gossamer/<component>:<tag> (make push's
# per-run tag, skaffold's inputDigest tags, the skaffold dev test's edited build). Each run of
# make e2e builds under a new tag (kubelet caches by tag), so without this every run leaves
# seven images behind, gigabytes after a few dozen runs on a CI machine. scripts/e2e-node.sh
# calls it at the end of every run with that run's tag: its images stay as the next run's layer
# cache, earlier runs' go. Only names under localhost:5000/gossamer/ are touched: the node's
# registry is the only place those names point to, and it is removed by make node-down.
# `buildah rmi` removes an image's untagged parent layers with it unless another image still
# builds on them, so the layers this run's images share (the base, the dependency layers) stay.
#   bash scripts/prune-e2e-images.sh [KEEP_TAG]     (no KEEP_TAG: remove them all)
# Prints each removed name; exits 1 when an image could not be removed.
set -euo pipefail
keep=${1:-}
prefix=localhost:5000/gossamer/

command -v buildah >/dev/null || { echo "prune-e2e-images: buildah is not installed" >&2; exit 2; }
names=$(buildah images --format '{{.Name}}:{{.Tag}}')
stale=()
while IFS= read -r name; do
  case "$name" in "$prefix"*) ;; *) continue ;; esac
  [ -n "$keep" ] && [ "${name##*:}" = "$keep" ] && continue
  stale+=("$name")
done <<<"$names"
[ "${#stale[@]}" -gt 0 ] || exit 0
status=0
for name in "${stale[@]}"; do
  if buildah rmi "$name" >/dev/null; then
    echo "$name"
  else
    echo "prune-e2e-images: could not remove $name" >&2
    status=1
  fi
done
exit "$status"
