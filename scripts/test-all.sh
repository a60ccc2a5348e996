#!/usr/bin/env bash
# Runs every check and test of the workspace, after installing the prerequisites.
# This is the test command README.md names; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
# The soak on namespaces (loss, rekeys, a target restart, a takeover), shortened for CI.
DVIPSEC_SOAK_SECONDS="${DVIPSEC_SOAK_SECONDS:-90}" cargo test -p dvipsec-hwtest --test soak_site -- --ignored
# The DPDK backend (feature `dpdk`, needs root and DPDK; its tests fail loudly under CI=true).
cargo clippy -p dvipsec-dpdk --features dpdk --all-targets -- -D warnings
cargo test -p dvipsec-dpdk --features dpdk
# The firmware with DPDK ports and cryptodev, end to end against strongSwan on namespaces.
# (This leaves target/debug/dvipsec built with DPDK, which the test runs.)
cargo clippy -p dvipsec -p dvipsec-hwtest --features dvipsec/dpdk,dvipsec-hwtest/dpdk --all-targets -- -D warnings
cargo build -p dvipsec --features dpdk
cargo test -p dvipsec-hwtest --features dpdk --test strongswan_site dpdk
scripts/fuzz-smoke.sh
