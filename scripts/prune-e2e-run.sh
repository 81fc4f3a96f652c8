#!/usr/bin/env bash
# The end of scripts/e2e-node.sh: prunes earlier runs' images (scripts/prune-e2e-images.sh),
# keeping this run's, tagged RUN_TAG. Without RUN_TAG (a run stopped before its env step set
# TAG) nothing is pruned: prune-e2e-images.sh without a tag to keep would remove every image
# under localhost:5000/gossamer/, this run's cache included. Housekeeping never fails a run:
# a prune that fails is a warning, and this script exits 0.
#   bash scripts/prune-e2e-run.sh [RUN_TAG]
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-}
if [ -z "$tag" ]; then
  echo "e2e-node: no run tag (the run stopped before its env step): no image pruned" >&2
  exit 0
fi
echo "e2e-node: removing earlier runs' images from buildah's storage" >&2
bash "$here/scripts/prune-e2e-images.sh" "$tag" | sed 's/^/    removed /' >&2 \
  || echo "e2e-node: WARNING: pruning the images of earlier runs failed (see above)" >&2
exit 0
