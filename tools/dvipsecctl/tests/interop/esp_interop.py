#!/usr/bin/env python3
"""Independent ESP peer for dvipsecctl's interoperability tests.

The Rust tests never trust our own engine to check itself: this script uses scapy's
`SecurityAssociation` (code we did not write) to build, encrypt and decrypt ESP packets, and
tshark's ESP dissector to verify ICVs in a pcap.

Usage: esp_interop.py probe|encrypt|decrypt|tshark
Reads one JSON document from stdin (a list of cases, except for `probe`) and writes one JSON
document to stdout. Every case carries a `name`; answers carry it back so that the Rust side can
say exactly which case failed. A case that scapy or tshark rejects gets an `error` string in its
answer instead of aborting the batch, so the Rust side decides what is expected.

Case fields (all hex strings are lowercase without separators):
  suite       aes128gcm16 | aes256gcm16 | chacha20poly1305 | aes256cbc-sha256 | null-sha256
  key         hex, encryption key (+ 4-byte salt for the AEADs); empty for null-sha256
  auth_key    hex, HMAC-SHA-256 key; empty for the AEADs
  spi, seq    integers; seq is the full 64-bit number, esn says whether its high half is used
  esn         bool
  mode        transport | tunnel; tunnel_src/tunnel_dst are the outer addresses
  udp_encap   [sport, dport] or null (RFC 3948 NAT-T)
  iv          hex of the explicit IV to use (encrypt only; null lets scapy pick a random one)
  inner       {family: 4|6, src, dst, proto: "tcp"|"udp", sport, dport, flags (tcp, e.g. "S"),
               payload_len}  (encrypt only)
  plain/sealed  hex of the packet to decrypt (decrypt) or the sealed packets (tshark)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, IPOption_RR, IPv6,
                           IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw,
                           wrpcap)
    from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation
    SCAPY_IMPORT_ERROR = None
except ImportError as import_error:  # probe reports it; every other command needs scapy
    SCAPY_IMPORT_ERROR = "%s" % import_error

# Our suite names -> (scapy crypt algo, scapy auth algo, tshark encryption, tshark authentication).
SUITES = {
    "aes128gcm16": ("AES-GCM", "NULL", "AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
    "aes256gcm16": ("AES-GCM", "NULL", "AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
    "chacha20poly1305": ("CHACHA20-POLY1305", "NULL", None, "NULL"),
    "aes256cbc-sha256": ("AES-CBC", "SHA2-256-128", "AES-CBC [RFC3602]",
                         "HMAC-SHA-256-128 [RFC4868]"),
    "null-sha256": ("NULL", "SHA2-256-128", "NULL", "HMAC-SHA-256-128 [RFC4868]"),
}


def security_association(case):
    """Builds scapy's SA for a case (tunnel header and NAT-T header included)."""
    crypt, auth, _, _ = SUITES[case["suite"]]
    key = bytes.fromhex(case.get("key") or "")
    auth_key = bytes.fromhex(case.get("auth_key") or "")
    kwargs = {
        "spi": case["spi"],
        "seq_num": case["seq"] & 0xFFFFFFFF,
        "crypt_algo": crypt,
        "crypt_key": key if crypt != "NULL" else None,
        "auth_algo": auth,
        "auth_key": auth_key if auth != "NULL" else None,
        "esn_en": bool(case.get("esn")),
        "esn": (case["seq"] >> 32) if case.get("esn") else 0,
    }
    if case.get("mode") == "tunnel":
        kwargs["tunnel_header"] = ip_header(case["tunnel_src"], case["tunnel_dst"])
    if case.get("udp_encap"):
        sport, dport = case["udp_encap"]
        kwargs["nat_t_header"] = UDP(sport=sport, dport=dport)
    return SecurityAssociation(ESP, **kwargs)


def ip_header(src, dst):
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


IPV6_EXTENSIONS = {
    "hbh": lambda: IPv6ExtHdrHopByHop(),
    "dstopt": lambda: IPv6ExtHdrDestOpt(),
    "routing": lambda: IPv6ExtHdrRouting(addresses=["2001:db8:99::9"]),
}


def inner_packet(inner):
    """Builds the deterministic plaintext IP packet a case describes."""
    header = ip_header(inner["src"], inner["dst"])
    if inner.get("ip_options"):
        header.options = [IPOption_RR(routers=["192.0.2.77"])]
    if inner.get("ipv6_extension"):
        header = header / IPV6_EXTENSIONS[inner["ipv6_extension"]]()
    if inner["proto"] == "tcp":
        l4 = TCP(sport=inner["sport"], dport=inner["dport"], flags=inner.get("flags", "S"),
                 seq=0x01020304, window=8192)
    elif inner["proto"] == "udp":
        l4 = UDP(sport=inner["sport"], dport=inner["dport"])
    elif ":" in inner["src"]:
        l4 = ICMPv6EchoRequest(id=inner["sport"], seq=1)
    else:
        l4 = ICMP(id=inner["sport"], seq=1)
    payload = bytes((i * 7 + 3) & 0xFF for i in range(inner.get("payload_len", 0)))
    packet = header / l4
    if payload:
        packet = packet / Raw(payload)
    # Round-trip through bytes so lengths and checksums are final.
    return packet.__class__(bytes(packet))


def parse_ip(data):
    return IPv6(data) if data and (data[0] >> 4) == 6 else IP(data)


def encrypt(case):
    sa = security_association(case)
    plain = inner_packet(case["inner"])
    iv = bytes.fromhex(case["iv"]) if case.get("iv") else None
    if case.get("bad_padding"):
        sa.crypt_algo = BadPaddingAlgo(sa.crypt_algo)
    sealed = sa.encrypt(plain, seq_num=case["seq"] & 0xFFFFFFFF, iv=iv)
    return {"plain": bytes(plain).hex(), "sealed": bytes(sealed).hex()}


class BadPaddingAlgo:
    """Wraps one SA's scapy CryptAlgo so that its padding is authentic but not 1, 2, 3, ...

    One more alignment unit of padding is added (so the length stays valid) and its third
    byte is wrong; the ICV is computed over the bad padding, so only the padding check can
    catch it.
    """

    def __init__(self, algo):
        self._algo = algo

    def __getattr__(self, name):
        return getattr(self._algo, name)

    def pad(self, esp):
        esp = self._algo.pad(esp)
        align = max(self._algo.block_size, 4)
        padding = bytearray(range(1, len(esp.padding) + align + 1))
        padding[2] = 0xEE
        esp.padding = bytes(padding)
        esp.padlen = len(padding)
        return esp


def decrypt(case):
    sealed = bytes.fromhex(case["sealed"])
    packet = parse_ip(sealed)
    answer = {"outer_problems": outer_header_problems(sealed), "esp": esp_fields(packet)}
    try:
        plain = security_association(case).decrypt(packet)
    except IPSecIntegrityError as err:
        answer["error"] = "integrity: %s" % err
        return answer
    answer["plain"] = bytes(plain).hex()
    return answer


def esp_fields(packet):
    """SPI, 32-bit sequence number and first 8 payload bytes (the AEADs' explicit IV) as scapy
    parses them, or None if scapy finds no ESP header."""
    if ESP not in packet:
        return None
    esp = packet[ESP]
    return {"spi": esp.spi, "seq": esp.seq, "head": bytes(esp.data[:8]).hex()}


def outer_header_problems(sealed):
    """Lists what is wrong in the outer IP (and NAT-T UDP) header of a sealed packet.

    scapy recomputes the length and checksum fields from the bytes; a correct header is
    rebuilt unchanged. An IPv4 UDP checksum of 0 is allowed (RFC 3948 section 2.1).
    """
    problems = []
    packet = parse_ip(sealed)
    rebuilt = packet.copy()
    if packet.version == 4:
        del rebuilt.len
        del rebuilt.chksum
    else:
        del rebuilt.plen
    if UDP in packet:
        udp = rebuilt[UDP]
        del udp.len
        if packet.version == 4 and packet[UDP].chksum == 0:
            udp.chksum = 0
        else:
            del udp.chksum
    rebuilt_bytes = bytes(rebuilt)
    if rebuilt_bytes != sealed:
        at = next((i for i, (a, b) in enumerate(zip(rebuilt_bytes, sealed)) if a != b),
                  min(len(rebuilt_bytes), len(sealed)))
        problems.append("header field differs at byte %d: sealed %s, scapy computes %s" %
                        (at, sealed[at:at + 2].hex(), rebuilt_bytes[at:at + 2].hex()))
    return problems


def run_case(action, case):
    try:
        answer = action(case)
    except Exception as err:  # the Rust side reports the case name and this text
        answer = {"error": "%s: %s" % (type(err).__name__, err)}
    answer["name"] = case["name"]
    return answer


def tshark_batch(cases):
    """Writes every sealed packet into one pcap, gives tshark every SA, reports its verdict per frame."""
    tshark = shutil.which("tshark")
    if tshark is None:
        return {"error": "tshark not found on PATH"}
    with tempfile.TemporaryDirectory(prefix="dvipsec-tshark-") as workdir:
        frames = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                  parse_ip(bytes.fromhex(case["sealed"])) for case in cases]
        pcap = os.path.join(workdir, "sealed.pcap")
        wrpcap(pcap, frames)
        config_dir = os.path.join(workdir, "config")
        os.makedirs(config_dir)
        with open(os.path.join(config_dir, "esp_sa"), "w") as uat:
            for case in cases:
                uat.write(esp_sa_record(case) + "\n")
        fields = ["frame.number", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad",
                  "esp.protocol", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"]
        command = [tshark, "-n", "-r", pcap,
                   "-o", "esp.enable_encryption_decode:TRUE",
                   "-o", "esp.enable_authentication_check:TRUE",
                   "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
                   "-E", "aggregator=,"]
        for field in fields:
            command += ["-e", field]
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=config_dir, XDG_CONFIG_HOME=config_dir)
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        if result.returncode != 0:
            return {"error": "tshark exit %d: %s" % (result.returncode, result.stderr.strip())}
        answers = []
        for case, line in zip(cases, result.stdout.splitlines()):
            values = dict(zip(fields, line.split("\t")))
            values["name"] = case["name"]
            answers.append(values)
        if len(answers) != len(cases):
            return {"error": "tshark printed %d frames for %d packets: %s" %
                    (len(answers), len(cases), result.stdout)}
        return {"frames": answers, "stderr": result.stderr.strip()}


def esp_sa_record(case):
    """One line of Wireshark's esp_sa UAT file for a case's SA."""
    _, _, encryption, authentication = SUITES[case["suite"]]
    if encryption is None:
        raise ValueError("tshark has no ESP decoder for suite %s" % case["suite"])
    outer = parse_ip(bytes.fromhex(case["sealed"]))
    outer_src, outer_dst = outer.src, outer.dst
    family = "IPv6" if outer.version == 6 else "IPv4"
    key = "0x" + case["key"] if case.get("key") else ""
    auth_key = "0x" + case["auth_key"] if case.get("auth_key") else ""
    fields = [family, outer_src, outer_dst, "0x%08x" % case["spi"], encryption, key,
              authentication, auth_key]
    return ",".join('"%s"' % field for field in fields)


def probe():
    """Says which optional parts of this environment exist."""
    if SCAPY_IMPORT_ERROR is not None:
        return {"scapy": False, "reason": SCAPY_IMPORT_ERROR, "chacha20poly1305": False,
                "tshark": shutil.which("tshark") is not None}
    from scapy.layers import ipsec
    return {
        "scapy": True,
        "chacha20poly1305": "CHACHA20-POLY1305" in ipsec.CRYPT_ALGOS,
        "tshark": shutil.which("tshark") is not None,
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: esp_interop.py probe|encrypt|decrypt|tshark < cases.json")
    command = sys.argv[1]
    if command != "probe" and SCAPY_IMPORT_ERROR is not None:
        sys.exit("scapy is not importable: %s" % SCAPY_IMPORT_ERROR)
    if command == "probe":
        answer = probe()
    else:
        cases = json.load(sys.stdin)
        if command == "encrypt":
            answer = [run_case(encrypt, case) for case in cases]
        elif command == "decrypt":
            answer = [run_case(decrypt, case) for case in cases]
        elif command == "tshark":
            answer = tshark_batch(cases)
        else:
            sys.exit("unknown command %r" % command)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
