#!/usr/bin/env bash
# make images: the five service images, the viz dashboard's and tap service's, and the demo
# app's, with docker when it is present, with buildah (no daemon, --isolation chroot) otherwise.
#
# Environment:
#   REGISTRY (gossamer) and TAG (dev): images are named $REGISTRY/<component>:$TAG
#   BUILDER=auto|docker|buildah
#   BASE=auto|upstream|local: the images' base. upstream is python:3.11-slim-bookworm and the
#     uv image from ghcr.io (what users get); local is a Debian base made with mmdebstrap and
#     uv from the Python registry (scripts/base-image.sh), for machines that reach neither.
#     auto (the default) takes upstream when its base resolves, local otherwise.
#   PUSH=1: push each image after building it (docker push, or buildah push to $REGISTRY).
#   PUSH_NETNS=<name>: push from inside that network namespace (the real node's registry
#     listens on localhost:5000 there, see make node-up).
#   ONLY="proxy injector": build only these components.
#   PLATFORMS (linux/amd64): with docker buildx, the platforms to build for.
# With --plan it builds nothing: it checks the components and prints, per line, each one's
# name, Dockerfile and build context.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
REGISTRY=${REGISTRY:-gossamer}
TAG=${TAG:-dev}
BUILDER=${BUILDER:-auto}
BASE=${BASE:-auto}
upstream_base=python:3.11-slim-bookworm
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

die() { echo "images: $*" >&2; exit 2; }
# The one table of components: their Dockerfiles (the default list and the check read it).
dockerfile_of() {
  case $1 in
    destination|identity|injector|proxy|proxy-init) echo "services/$1/Dockerfile" ;;
    viz-web|viz-tap) echo "cli/docker/$1/Dockerfile" ;;
    demo-app) echo examples/demo/Dockerfile ;;
    *) return 1 ;;
  esac
}
context_of() { if [ "$1" = demo-app ]; then echo examples/demo; else echo .; fi; }
known="destination identity injector proxy proxy-init viz-web viz-tap demo-app"
components=(${ONLY:-$known})
for c in "${components[@]}"; do
  dockerfile=$(dockerfile_of "$c") || die "unknown component $c ($known)"
  [ -f "$dockerfile" ] || die "$c: $dockerfile is missing"
done
if [ "${1:-}" = --plan ]; then
  for c in "${components[@]}"; do echo "$c $(dockerfile_of "$c") $(context_of "$c")"; done
  exit 0
fi

if [ "$BUILDER" = auto ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker
  elif command -v buildah >/dev/null 2>&1; then BUILDER=buildah
  else die "neither a working docker nor buildah is installed (apt-get install buildah)"; fi
fi

base_args=()
if [ "$BASE" = auto ]; then
  BASE=upstream
  if [ "$BUILDER" = buildah ] && ! buildah inspect --type image "$upstream_base" >/dev/null 2>&1 \
     && ! timeout 20 skopeo inspect --raw "docker://docker.io/library/$upstream_base" >/dev/null 2>&1; then
    BASE=local
  fi
fi
if [ "$BASE" = local ]; then
  while IFS= read -r line; do base_args+=(--build-arg "$line"); done < <(bash scripts/base-image.sh)
fi
# Behind a TLS-intercepting egress the host's CA bundle is what makes the registries trusted:
# mounted into the RUN steps only, named by a build argument (never part of an image).
ca_args=()
if [ -n "${SSL_CERT_FILE:-}" ] && [ -s "$SSL_CERT_FILE" ]; then
  if [ "$BUILDER" = buildah ]; then
    ca_args=(-v "$SSL_CERT_FILE:/run/build-ca.crt:ro" --build-arg SSL_CERT_FILE=/run/build-ca.crt)
  fi
fi
echo "images: building ${components[*]} with $BUILDER (base: $BASE) as $REGISTRY/<component>:$TAG" >&2

push() {
  local image=$1
  if [ "$BUILDER" = docker ]; then docker push "$image"; return; fi
  local cmd=(buildah push --quiet --tls-verify=false "$image" "docker://$image")
  if [ -n "${PUSH_NETNS:-}" ]; then cmd=(nsenter "--net=/run/netns/$PUSH_NETNS" "${cmd[@]}"); fi
  "${cmd[@]}"
}

for c in "${components[@]}"; do
  image="$REGISTRY/$c:$TAG"
  start=$(date +%s)
  if [ "$BUILDER" = docker ]; then
    build=(docker build)
    if docker buildx version >/dev/null 2>&1; then
      build=(docker buildx build --platform "${PLATFORMS:-linux/amd64}")
    fi
    "${build[@]}" -f "$(dockerfile_of "$c")" -t "$image" --build-arg REVISION="$revision" \
      "${base_args[@]}" "$(context_of "$c")"
  else
    # --force-rm: without it buildah 1.28 keeps the working container of every stage a later
    # one only copies from (FROM ${UV_IMAGE} AS uv), one per image per build, and every
    # container of a failed build.
    nice -n 10 buildah bud --quiet --format docker --isolation chroot --layers --force-rm -f "$(dockerfile_of "$c")" -t "$image" \
      --build-arg REVISION="$revision" "${base_args[@]}" "${ca_args[@]}" "$(context_of "$c")" >/dev/null
  fi
  echo "images: $image built in $(( $(date +%s) - start ))s" >&2
  if [ "${PUSH:-0}" = 1 ]; then push "$image"; fi
done
