#!/usr/bin/env bash
# skaffold's custom builder for the `node` profile (skaffold.yaml): builds one artifact with
# scripts/images.sh (buildah, no daemon) and pushes it to the registry skaffold names.
# skaffold sets IMAGE (<registry>/<component>:<tag>) and PUSH_IMAGE; the component is the
# image name's last path element (destination, identity, injector, proxy, proxy-init).
# GOSSAMER_BUILD_NETNS: a network namespace file to build in. scripts/skaffold-node.sh runs
# skaffold inside the node's namespace (where its registry is) and sets this to the host's,
# which reaches the package registries the image builds need; the push still goes to the
# node's registry (PUSH_NETNS).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${IMAGE:-}" ] || { echo "skaffold-build: IMAGE is not set (this is the custom builder of skaffold.yaml's node profile)" >&2; exit 2; }
ref=${IMAGE%@*}
case "$ref" in */*:*) ;; *) echo "skaffold-build: cannot read <registry>/<component>:<tag> from IMAGE=$IMAGE" >&2; exit 2 ;; esac
tag=${ref##*:}
repo=${ref%:*}
component=${repo##*/}
registry=${repo%/*}
push=0
if [ "${PUSH_IMAGE:-false}" = true ]; then push=1; fi
cmd=(env ONLY="$component" REGISTRY="$registry" TAG="$tag" PUSH="$push" bash "$here/scripts/images.sh")
if [ -n "${GOSSAMER_BUILD_NETNS:-}" ]; then cmd=(nsenter --net="$GOSSAMER_BUILD_NETNS" "${cmd[@]}"); fi
exec "${cmd[@]}"
