#!/usr/bin/env bash
# Writes the checked-in seeds of load_yaml: the complete examples and a few of the broken files
# the configuration tests refuse (one per kind of mistake the validation catches).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/load_yaml
rm -f corpus/load_yaml/seed-*
for file in ../examples/*.yaml ../tests/broken/{duplicate-key,rank-duplicate,destip-unknown-node,inline-psk,lifesize-bounds,mode-typo}.yaml; do
    cp "$file" "corpus/load_yaml/seed-$(basename "$file")"
done
