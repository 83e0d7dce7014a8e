"""Bring a large file to the GPU machine in pieces, one `device` call per piece.

A call there carries at most 64 MiB with the working tree, but files in git-ignored folders
stay between calls while the machine is warm. So, here::

    python bench/carry.py split FILE --size 25M      # pieces into .carry/pieces/NAME.partNN

then one call per piece, each carrying ``.carry`` with only that piece in it::

    python bench/carry.py pick NAME N                # here: leave only piece N in .carry
    python3 bench/carry.py receive NAME SHA256       # there: keep it in .store/; once all
                                                     # pieces are there, assemble and check

``receive`` prints ``complete PATH`` when the file is whole and its sha256 matches, and exits
2 on a hash mismatch (the pieces are then dropped).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

CARRY = Path(".carry") / "pieces"
STORE = Path(".store")
ALL = Path(".carry") / "all"  # every piece, kept here while they are picked one by one


def _size(text: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1].upper(), 1)
    return int(text.rstrip("KMGkmg")) * mult


def split(path: Path, size: int) -> None:
    ALL.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes()
    n = -(-len(data) // size)
    for i in range(n):
        (ALL / f"{path.name}.part{i:02d}").write_bytes(data[i * size:(i + 1) * size])
    (ALL / f"{path.name}.count").write_text(str(n))
    print(f"{n} pieces of {path.name} in {ALL} (sha256 {hashlib.sha256(data).hexdigest()})")


def pick(name: str, i: int) -> None:
    if CARRY.exists():
        shutil.rmtree(CARRY)
    CARRY.mkdir(parents=True)
    shutil.copy(ALL / f"{name}.part{i:02d}", CARRY)
    shutil.copy(ALL / f"{name}.count", CARRY)


def receive(name: str, sha: str) -> int:
    STORE.mkdir(exist_ok=True)
    for p in CARRY.glob(f"{name}.*"):
        shutil.copy(p, STORE / p.name)
    count = STORE / f"{name}.count"
    if not count.exists():
        print("no piece received")
        return 1
    n = int(count.read_text())
    have = sorted(STORE.glob(f"{name}.part*"))
    if len(have) < n:
        print(f"{len(have)} of {n} pieces")
        return 0
    out = STORE / name
    h = hashlib.sha256()
    with out.open("wb") as f:
        for p in have:
            b = p.read_bytes()
            h.update(b)
            f.write(b)
    if h.hexdigest() != sha:
        out.unlink()
        for p in have:
            p.unlink()
        print(f"sha256 mismatch for {name}: pieces dropped")
        return 2
    print(f"complete {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("path", type=Path)
    s.add_argument("--size", default="25M")
    p = sub.add_parser("pick")
    p.add_argument("name")
    p.add_argument("index", type=int)
    r = sub.add_parser("receive")
    r.add_argument("name")
    r.add_argument("sha256")
    a = ap.parse_args()
    if a.cmd == "split":
        split(a.path, _size(a.size))
        return 0
    if a.cmd == "pick":
        pick(a.name, a.index)
        return 0
    return receive(a.name, a.sha256)


if __name__ == "__main__":
    sys.exit(main())
