#!/usr/bin/env python3
"""Writes the checked-in seeds of decap, peek and peek_burst: real ESP packets sealed by
`dvipsecctl esp seal` with the keys, SPI and SA shapes of fuzz_targets/sas.rs.

Run from this folder with dvipsecctl built: `python3 seeds.py [path/to/dvipsecctl]`.
"""
import struct
import subprocess
import sys
from pathlib import Path

DVIPSECCTL = sys.argv[1] if len(sys.argv) > 1 else "../../../target/debug/dvipsecctl"
SPI = "0x01020304"
PEER_INNER, DVIPA = "10.1.0.1", "203.0.113.10"
PEER_OUTER = "198.51.100.1"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def addr(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def ipv4(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                         addr(src), addr(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def with_l4_checksum(proto: int, src: str, dst: str, segment: bytes, at: int) -> bytes:
    pseudo = addr(src) + addr(dst) + struct.pack("!BBH", 0, proto, len(segment))
    value = checksum(pseudo + segment)
    return segment[:at] + struct.pack("!H", value) + segment[at + 2:]


def tcp_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    segment = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    return ipv4(6, src, dst, with_l4_checksum(6, src, dst, segment, 16))


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    segment = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return ipv4(17, src, dst, with_l4_checksum(17, src, dst, segment, 6))


INNER = [tcp_syn(PEER_INNER, DVIPA, 1000, 60), udp(PEER_INNER, DVIPA, 5000, 60, b"seed")]

# (selector byte of sas.rs, dvipsecctl arguments): suite = Suite::ALL[selector % 6], 0x08 tunnel,
# 0x10 UDP 4500, 0x20 ESN.
ENC = {"aes128gcm16": 20, "aes256gcm16": 36, "aes128cbc-sha256": 16, "null-sha256": 0}
SHAPES = [
    (0x00, "aes128gcm16", []),
    (0x18, "aes128gcm16", ["--mode", "tunnel", "--udp-encap", "4500:4500"]),
    (0x0D, "aes256gcm16", ["--mode", "tunnel"]),
    (0x1B, "aes128cbc-sha256", ["--mode", "tunnel", "--udp-encap", "4500:4500"]),
    (0x05, "null-sha256", []),
    (0x24, "aes128gcm16", ["--esn"]),
]


def seal(suite: str, extra: list, inner: bytes, seq: int) -> bytes:
    args = [DVIPSECCTL, "esp", "seal", "--hex", "--spi", SPI, "--suite", suite,
            "--seq", str(seq)]
    if ENC[suite]:
        args += ["--key", "11" * ENC[suite]]
    if suite.endswith("sha256"):
        args += ["--auth-key", "22" * 32]
    if "tunnel" in extra:
        args += ["--tunnel-src", PEER_OUTER, "--tunnel-dst", DVIPA]
    out = subprocess.run(args + extra, input=inner.hex() + "\n", capture_output=True,
                         text=True, check=True).stdout
    return bytes.fromhex(out.strip())


def write(target: str, name: str, data: bytes) -> None:
    folder = Path("corpus") / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    for folder in Path("corpus").glob("*"):
        for old in folder.glob("seed-*"):
            old.unlink()
    sealed = []
    for selector, suite, extra in SHAPES:
        for index, inner in enumerate(INNER):
            packet = seal(suite, extra, inner, seq=index + 1)
            name = f"{selector:02x}-{suite}-{'tcp' if index == 0 else 'udp'}"
            write("decap", name, bytes([selector]) + packet)
            write("peek", name, bytes([selector]) + packet)
            sealed.append((selector, packet))
    # peek_burst: eight SA choices, then [pool index, length, packet] records.
    choices = bytes(s for s, _, _ in SHAPES) + bytes([0x18, 0x00])
    records = b"".join(bytes([i // 2, len(p)]) + p for i, (_, p) in enumerate(sealed)
                       if len(p) < 0xFF)
    write("peek_burst", "all-shapes", choices + records)
    write("peek_burst", "one-sa-twice", choices + bytes([1, len(sealed[2][1])]) + sealed[2][1]
          + bytes([1, 0xFF]) + sealed[3][1])


if __name__ == "__main__":
    main()
