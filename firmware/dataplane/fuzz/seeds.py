#!/usr/bin/env python3
"""Writes the checked-in seeds of packet and gre_decap: the testbed peer's real ESP packets
(SPI_TO_DVIPA, KEY_TO_DVIPA, AES-128-GCM tunnel over UDP 4500, as fuzz_targets/packet.rs installs
them) sealed by `dvipsecctl esp seal`, the other traffic a distributor sees on its external port,
and the same ESP in GRE over XCF as a distributor forwards it.

Run from this folder with dvipsecctl built: `python3 seeds.py [path/to/dvipsecctl]`. The packet
builders and the sealing come from crypto/esp/fuzz/seeds.py.
"""
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "crypto" / "esp" / "fuzz"))
import seeds as esp  # noqa: E402

SPI_TO_DVIPA = 0x1000
DISTRIBUTOR_XCF, TARGET_XCF = "10.9.0.1", "10.9.0.10"


def seal(inner: bytes, seq: int) -> bytes:
    esp.SPI = hex(SPI_TO_DVIPA)
    return esp.seal("aes128gcm16", ["--mode", "tunnel", "--udp-encap", "4500:4500"], inner, seq)


def gre(inner: bytes, checksum: bool = False) -> bytes:
    if checksum:
        body = struct.pack("!HHHH", 0x8000, 0x0800, 0, 0) + inner
        body = body[:4] + struct.pack("!H", esp.checksum(body)) + body[6:]
    else:
        body = struct.pack("!HH", 0, 0x0800) + inner
    return esp.ipv4(47, DISTRIBUTOR_XCF, TARGET_XCF, body)


def write(target: str, name: str, data: bytes) -> None:
    folder = Path("corpus") / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    if len(sys.argv) > 1:
        esp.DVIPSECCTL = sys.argv[1]
    for folder in Path("corpus").glob("*"):
        for old in folder.glob("seed-*"):
            old.unlink()
    syn = seal(esp.tcp_syn(esp.PEER_INNER, esp.DVIPA, 1000, 60), seq=1)
    datagram = seal(esp.udp(esp.PEER_INNER, esp.DVIPA, 5000, 60, b"ping"), seq=2)
    other_port = seal(esp.tcp_syn(esp.PEER_INNER, esp.DVIPA, 1001, 80), seq=3)
    ike_header = bytes(8) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + struct.pack("!II", 0, 28)
    packets = {
        "esp-syn": syn,
        "esp-udp": datagram,
        "esp-undistributed-port": other_port,
        "ike-nat-t": esp.udp(esp.PEER_OUTER, esp.DVIPA, 4500, 4500, bytes(4) + ike_header),
        "ike-500": esp.udp(esp.PEER_OUTER, esp.DVIPA, 500, 500, ike_header),
        "nat-keepalive": esp.udp(esp.PEER_OUTER, esp.DVIPA, 4500, 4500, b"\xff"),
    }
    for name, packet in packets.items():
        write("packet", name, packet)
    write("gre_decap", "esp-syn", gre(syn))
    write("gre_decap", "esp-udp-checksummed", gre(datagram, checksum=True))
    write("gre_decap", "inner-udp", gre(esp.udp(esp.PEER_INNER, esp.DVIPA, 5000, 60, b"x")))


if __name__ == "__main__":
    main()
