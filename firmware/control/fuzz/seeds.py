#!/usr/bin/env python3
"""Writes the checked-in seeds of control_line: every request line as the client writes it, and
real answers from `dvipsec demo --run-dir` (a distributor and a target). The key export is
asked for but its answer is not kept: seeds hold no key material.

Run from this folder with the firmware built: `python3 seeds.py [path/to/dvipsec]`.
"""
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DVIPSEC = sys.argv[1] if len(sys.argv) > 1 else "../../../target/debug/dvipsec"
PLAIN = ["status", "sa_list", "dct_list", "ike_list", "conn_list", "cf_show", "keys_export",
         "metrics"]
REQUESTS = [{"kind": kind} for kind in PLAIN] + [{"kind": "takeover", "dvipa": "203.0.113.10"}]
# Keep answers small enough that the fuzzer's inputs stay short.
MAX_ANSWER = 4096


def line(request: dict) -> bytes:
    return json.dumps({"version": 1, "request": request}, separators=(",", ":")).encode() + b"\n"


def ask(path: Path, request: dict) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line(request))
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def main() -> None:
    folder = Path("corpus/control_line")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for request in REQUESTS:
        (folder / f"seed-request-{request['kind']}").write_bytes(line(request))
    with tempfile.TemporaryDirectory() as run:
        run_dir = Path(run) / "run"
        demo = subprocess.Popen([DVIPSEC, "demo", "--seconds", "6", "--run-dir", str(run_dir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(3)
            sockets = sorted(run_dir.glob("*.sock"))
            # The first box of the site is a distributor, the last a target.
            chosen = sockets[:1] + sockets[-1:]
            for sock in chosen:
                for request in REQUESTS:
                    answer = ask(sock, request)
                    if request["kind"] == "keys_export" or len(answer) > MAX_ANSWER:
                        continue
                    name = f"seed-answer-{sock.stem}-{request['kind']}"
                    (folder / name).write_bytes(answer)
        finally:
            demo.wait(timeout=30)


if __name__ == "__main__":
    main()
