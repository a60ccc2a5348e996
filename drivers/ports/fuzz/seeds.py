#!/usr/bin/env python3
"""Writes the checked-in seeds of rx_block and switch.

rx_block: TPACKET_V3 receive blocks laid out as the kernel fills them (block descriptor of 48
bytes, then frames whose tpacket3_hdr says where the Ethernet frame starts and where the next
frame is). switch: records of [port, length, Ethernet frame] between the fuzz target's three
ports, and drains (port with the top bit set).

Run from this folder: `python3 seeds.py`.
"""
import struct
from pathlib import Path

MACS = [bytes([2, 0, 0, 0, 0, n]) for n in range(3)]
HEADER_LEN = 48  # sizeof(struct tpacket3_hdr)
FIRST_FRAME = 48  # after struct tpacket_block_desc, as the kernel places it
MAC_OFFSET = 82  # TPACKET3_HDRLEN aligned so that the IP header lands on 16 bytes
ALIGN = 16


def ethernet(dst: bytes, src: bytes, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", 0x0800) + payload


def ipv4_udp(data: bytes) -> bytes:
    udp = struct.pack("!HHHH", 5000, 60, 8 + len(data), 0) + data
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                       bytes([10, 1, 0, 1]), bytes([203, 0, 113, 10])) + udp


def tpacket3(frame: bytes, next_offset: int) -> bytes:
    header = struct.pack("<IIIIIIHH", next_offset, 1_700_000_000, 0, len(frame), len(frame),
                         1, MAC_OFFSET, MAC_OFFSET + 14)
    header += bytes(HEADER_LEN - len(header))
    body = header + bytes(MAC_OFFSET - HEADER_LEN) + frame
    return body + bytes(-len(body) % ALIGN)


def block(frames: list) -> bytes:
    out = bytearray(FIRST_FRAME)
    for index, frame in enumerate(frames):
        last = index == len(frames) - 1
        size = len(tpacket3(frame, 0))
        out += tpacket3(frame, 0 if last else size)
    head = struct.pack("<II", len(frames), FIRST_FRAME)
    return head + bytes(out)


def write(target: str, name: str, data: bytes) -> None:
    folder = Path("corpus") / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    for folder in Path("corpus").glob("*"):
        for old in folder.glob("seed-*"):
            old.unlink()
    frames = [ethernet(MACS[0], MACS[1], ipv4_udp(b"first")),
              ethernet(MACS[0], MACS[2], ipv4_udp(b"second frame" * 4))]
    write("rx_block", "one-frame", block(frames[:1]))
    write("rx_block", "two-frames", block(frames))
    broadcast = ethernet(b"\xff" * 6, MACS[0], ipv4_udp(b"to all"))
    records = b""
    for src, dst in [(0, 1), (1, 2), (2, 0)]:
        frame = ethernet(MACS[dst], MACS[src], ipv4_udp(bytes([src, dst])))
        records += bytes([src, len(frame)]) + frame
    write("switch", "unicast-each-way", records)
    drain = bytes([0x81, 0])
    write("switch", "broadcast-then-drain", bytes([0, len(broadcast)]) + broadcast + drain)
    unknown = ethernet(bytes([2, 0, 0, 0, 0, 9]), MACS[1], ipv4_udp(b"nobody"))
    write("switch", "unknown-destination", bytes([1, len(unknown)]) + unknown + drain)


if __name__ == "__main__":
    main()
