#!/usr/bin/env bash
# Runs every check and test of the workspace, after installing the prerequisites.
# This is the test command README.md names; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
