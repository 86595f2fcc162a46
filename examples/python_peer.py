"""The Python half of examples/python_peer.rs: typed messages with Rust.

Started by the Rust example, which passes the address as an argument and the
key on standard input. Any CPython from 3.8 works; 3.11 and older need the
Rust side's allow_legacy_md5(true), which the example sets for them.
"""
import sys
from multiprocessing.connection import Client

host, port = sys.argv[1].rsplit(":", 1)
key = bytes.fromhex(sys.stdin.read().strip())

with Client((host, int(port)), authkey=key) as conn:
    conn.send({"id": 1, "name": "resize", "sizes": [640, 480], "urgent": True})
    reply = conn.recv()
    print(f"python received {reply!r}")
    conn.send(("thanks", 2**100, {3, 1, 2}, None, b"\x00\x01"))
