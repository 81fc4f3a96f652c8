#!/usr/bin/env bash
# Prints one step of the README's "Running on Kubernetes" section: the ```sh block that follows
# the line `<!-- e2e-node: NAME -->`. scripts/e2e-node.sh runs these blocks, so the README's
# steps are the ones the end-to-end test runs. Exits 1 when NAME is missing, appears twice or
# is not followed by a ```sh block. With --list, prints every step's name in README order.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
readme=${README:-$here/README.md}
[ $# -eq 1 ] || { echo "usage: $0 NAME | --list" >&2; exit 2; }
if [ "$1" = --list ]; then
  sed -n 's/^<!-- e2e-node: \([a-z0-9-]*\) -->$/\1/p' "$readme"
  exit 0
fi
awk -v name="$1" '
  $0 == "<!-- e2e-node: " name " -->" { found++; expect = 1; next }
  expect == 1 { if ($0 != "```sh") { bad = 1; exit } expect = 0; inside = 1; next }
  inside == 1 && $0 == "```" { inside = 0; closed++; next }
  inside == 1 { print }
  END {
    if (bad) { print "readme-step: <!-- e2e-node: " name " --> is not followed by a ```sh line" > "/dev/stderr"; exit 1 }
    if (found == 0) { print "readme-step: no step " name " in the README" > "/dev/stderr"; exit 1 }
    if (found > 1) { print "readme-step: step " name " appears " found " times in the README" > "/dev/stderr"; exit 1 }
    if (inside || closed != 1) { print "readme-step: step " name " has no closing ``` line" > "/dev/stderr"; exit 1 }
  }
' "$readme"
