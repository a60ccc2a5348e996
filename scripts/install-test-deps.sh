#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, gcc and Python on a fresh Debian machine:
# tshark and scapy (independent ESP checkers), strongSwan with its user-space ESP (the independent
# IKEv2 peer), iproute2 (network namespaces) and ping (traffic through the tunnels).
# Idempotent: it only installs what is missing. Needs root for apt-get.
set -euo pipefail

apt_packages=()
command -v tshark >/dev/null 2>&1 || apt_packages+=(tshark)
command -v ip >/dev/null 2>&1 || apt_packages+=(iproute2)
command -v ping >/dev/null 2>&1 || apt_packages+=(iputils-ping)
command -v nft >/dev/null 2>&1 || apt_packages+=(nftables)
if ! command -v swanctl >/dev/null 2>&1 || [ ! -x /usr/sbin/charon-systemd ] \
    || ! ls /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so >/dev/null 2>&1; then
    apt_packages+=(strongswan-swanctl charon-systemd strongswan-charon libcharon-extra-plugins
        libstrongswan-extra-plugins libstrongswan-standard-plugins)
fi
# DPDK 22.11 for dvipsec-dpdk's `dpdk` feature: headers, PMDs, pkg-config and libclang for bindgen.
if ! pkg-config --exists libdpdk 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/librte_net_ring.so ] \
    || ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    apt_packages+=(dpdk libdpdk-dev dpdk-dev pkg-config libclang-dev clang)
fi

if [ "${#apt_packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: need root to apt-get install ${apt_packages[*]}" >&2
        exit 1
    fi
    echo "install-test-deps: apt-get install ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if ! python3 -c 'import scapy.layers.ipsec, cryptography' >/dev/null 2>&1; then
    echo "install-test-deps: pip install scapy cryptography"
    python3 -m pip install --quiet --disable-pip-version-check scapy cryptography
fi
