"""A decompression bomb in the middle of a generated WAT: rows, time and peak RSS per case.

    nice .venv/bin/python bench/extract/bomb.py [--gib 10] [--pages 1000]

Writes a generated WAT (crawlpairs.generate), then the same file with one extra WAT
member after its middle record: declared Content-Length N GiB, N GiB of zeros (about
1 MB compressed per GiB, tests/support/faults.write_zero_bomb). Each case is read by
extract_stream in a fresh process (so ru_maxrss is that read's peak): the clean file,
the bomb file with the default max_inflate_bytes, and with max_inflate_bytes = 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))


def child(path: str, cap: int) -> None:
    from crawlpairs.config import ExtractConfig
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract.candidates import extract_stream

    cfg = ExtractConfig(lid_model=None, max_inflate_bytes=cap)
    stats = Stats()
    t = time.time()
    with open(path, "rb") as fh:
        rows = sum(b.num_rows for b in extract_stream(fh, path, cfg, stats))
    # VmHWM is this process's own high-water mark; ru_maxrss would carry the parent's across fork + exec
    status = Path("/proc/self/status").read_text()
    peak = int(status.split("VmHWM:", 1)[1].split()[0]) // 1024
    print(f"| {Path(path).name[:40]} | {cap} | {rows} | {dict(stats.errors)} | {time.time() - t:.1f} | {peak} |",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=10)
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--work", default=str(HERE / "work" / "bomb"))
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from crawlpairs.generate import generate
    from support.faults import write_zero_bomb

    work = Path(args.work)
    src = Path(generate(str(work), kind="wat", files=1, pages_per_file=args.pages, seed=5, layout="flat",
                        write_truth=False).wat_files[0])
    data = src.read_bytes()
    members, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        members.append(data[pos:end])
        pos = end
    k = len(members) // 2
    bomb = work / "bomb.wat.gz"
    size = args.gib << 30
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with open(bomb, "wb") as fh:
        fh.write(b"".join(members[:k]))
        n = write_zero_bomb(fh, head, size)
        fh.write(b"".join(members[k:]))
    print(f"bomb member: {n} bytes compressed, {args.gib} GiB inflated\n")
    print("| file | max_inflate_bytes | rows | errors | wall s | peak RSS MiB |\n| --- | ---: | ---: | --- | ---: | ---: |")
    for path, cap in ((src, 256 << 20), (bomb, 256 << 20), (bomb, 0)):
        subprocess.run([sys.executable, __file__, "--child", str(path), str(cap)], check=True)


if __name__ == "__main__":
    main()
