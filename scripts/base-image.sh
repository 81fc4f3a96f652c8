#!/usr/bin/env bash
# Builds, without Docker, the two local images the service Dockerfiles can start FROM when
# Docker Hub and ghcr.io are out of reach (make images on a machine with buildah only):
#   localhost/gossamer-base:<key>  Debian bookworm minbase + python3.11 + iptables (mmdebstrap)
#   localhost/gossamer-uv:<ver>    the uv binary at /uv, from the Python registry's uv wheel
# The base's root filesystem tarball is cached under $HOME/.cache/gossamer/images/ keyed by
# suite and package list, so a second machine-local run only re-imports it.
# Prints two lines: BASE_IMAGE=<ref> and UV_IMAGE=<ref> (the build args of the Dockerfiles).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
packages=python3,python3.11,ca-certificates,iptables,passwd
uv_version=$(sed -n 's/.*"uv==\([0-9.]*\)".*/\1/p' "$here/Makefile" | head -n1)
cache=${GOSSAMER_CACHE:-$HOME/.cache/gossamer}/images
key="$suite-$(printf '%s' "$packages" | sha256sum | cut -c1-12)"
base_ref="localhost/gossamer-base:$key"
uv_ref="localhost/gossamer-uv:$uv_version"

die() { echo "base-image: $*" >&2; exit 2; }
command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah)"
[ -n "$uv_version" ] || die "cannot read the pinned uv version from the Makefile"

tarball="$cache/base-$key/rootfs.tar"
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
  mkdir -p "$(dirname "$tarball")"
  echo "base-image: mmdebstrap $suite ($packages) into $tarball" >&2
  start=$(date +%s)
  nice -n 10 mmdebstrap --format=tar --variant=minbase --include="$packages" \
    --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
    "$suite" "$tarball.tmp.$$.tar" >&2
  mv "$tarball.tmp.$$.tar" "$tarball"
  echo "base-image: root filesystem built in $(( $(date +%s) - start ))s" >&2
fi

if ! buildah inspect --type image "$base_ref" >/dev/null 2>&1; then
  c=$(buildah from scratch)
  trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
  buildah add --quiet "$c" "$tarball" / >&2
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$c"
  buildah commit --quiet --rm "$c" "$base_ref" >/dev/null
  trap - EXIT
fi

if ! buildah inspect --type image "$uv_ref" >/dev/null 2>&1; then
  uv_bin="$cache/uv-$uv_version/uv"
  if [ ! -x "$uv_bin" ]; then
    wheels=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "uv==$uv_version" >&2
    python3 - "$wheels" "$uv_bin" <<'PY'
import pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("uv-*.whl"))
target = pathlib.Path(sys.argv[2])
target.parent.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    member = next(n for n in archive.namelist() if n.endswith(".data/scripts/uv"))
    with archive.open(member) as src, open(f"{target}.tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
pathlib.Path(f"{target}.tmp").chmod(0o755)
pathlib.Path(f"{target}.tmp").rename(target)
PY
    rm -rf "$wheels"
  fi
  c=$(buildah from scratch)
  trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
  buildah copy --quiet "$c" "$uv_bin" /uv >&2
  buildah commit --quiet --rm "$c" "$uv_ref" >/dev/null
  trap - EXIT
fi
echo "BASE_IMAGE=$base_ref"
echo "UV_IMAGE=$uv_ref"
