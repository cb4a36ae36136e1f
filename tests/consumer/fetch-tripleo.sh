#!/usr/bin/env bash
# Download the pinned TripleO distributions of tripleo-dists.txt into DIR (default
# .venv/tripleo-dist): files only, no dependencies, nothing installed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.venv/tripleo-dist}
pins=tests/consumer/tripleo-dists.txt
stamp="$dest/.complete"
if [ -f "$stamp" ] && [ "$stamp" -nt "$pins" ]; then exit 0; fi
mkdir -p "$dest"
# THT's sdist builds its metadata with pbr, which setuptools >= 61 refuses ("Multiple
# top-level packages"): pip download prepares metadata, so cap setuptools for that build.
constraint=$(mktemp)
trap 'rm -f "$constraint"' EXIT
echo 'setuptools<61' > "$constraint"
.venv/bin/pip download -q --no-deps --require-hashes --no-binary tripleo-heat-templates \
    --build-constraint "$constraint" -d "$dest" -r "$pins" 2>&1 | grep -v '^WARNING' || true
for f in tripleo_ansible-6.0.0-py2.py3-none-any.whl tripleo_common-18.0.0-py3-none-any.whl \
         tripleo-heat-templates-14.3.0.tar.gz; do
  [ -f "$dest/$f" ] || { echo "setup: $dest/$f was not downloaded" >&2; exit 1; }
done
touch "$stamp"
