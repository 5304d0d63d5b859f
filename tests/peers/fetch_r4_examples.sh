#!/usr/bin/env bash
# Fetch the official HL7 FHIR R4 examples (npm package hl7.fhir.r4.examples@4.0.1) for the peer
# test in tests/tests/it/peers.rs, and print the folder that holds them.
#
#   tests/peers/fetch_r4_examples.sh [TARGET_DIR]
#
# TARGET_DIR defaults to $CARGO_TARGET_DIR, else <workspace>/target. The examples land in
# TARGET_DIR/fhir-r4-examples/ as <Type>-<id>.json files (package.json, .index.json and any other
# non-resource files are left out). Idempotent: when the folder is already complete (a stamp file
# names the package), nothing is downloaded. The folder's absolute path is the only thing printed
# on standard output; progress goes to standard error. Needs npm and the npm registry.
set -euo pipefail

PACKAGE="hl7.fhir.r4.examples@4.0.1"

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../.." && pwd)
target=${1:-${CARGO_TARGET_DIR:-$workspace/target}}
mkdir -p "$target"
target=$(cd "$target" && pwd)
dest="$target/fhir-r4-examples"
stamp="$dest/.fetched"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$PACKAGE" ]]; then
    echo "fetch_r4_examples: $PACKAGE already in $dest" >&2
    echo "$dest"
    exit 0
fi

command -v npm >/dev/null || { echo "fetch_r4_examples: npm is needed (apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d "$target/.fhir-r4-examples.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fetch_r4_examples: npm pack $PACKAGE" >&2
tarball=$(cd "$work" && npm pack --silent "$PACKAGE" | tail -n 1)
tar -xzf "$work/$tarball" -C "$work"

mkdir -p "$work/out"
count=0
shopt -s nullglob
for f in "$work"/package/*.json; do
    name=$(basename "$f")
    case "$name" in
        package.json | .index.json) continue ;;
    esac
    mv "$f" "$work/out/$name"
    count=$((count + 1))
done
if (( count == 0 )); then
    echo "fetch_r4_examples: no example resources found in $tarball" >&2
    exit 1
fi
echo "$PACKAGE" > "$work/out/.fetched"

rm -rf "$dest"
mv "$work/out" "$dest"
echo "fetch_r4_examples: $count example resources in $dest" >&2
echo "$dest"
