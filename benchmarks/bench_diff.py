"""Peak memory and speed of a full listing diff of a large bucket (merge_diff + DeleteSpool).

    python benchmarks/bench_diff.py [--objects 1000000] [--json PATH]

Builds, in a temp dir, a real ``ObjectIndex`` holding ``--objects`` rows for one bucket, and a
synthetic backend whose ``list_page`` returns 1000-entry pages of ``--objects`` entries. Against
the index, 1% of the source objects changed (same size, another ETag), 0.5% are new and 0.5% of
the index rows are gone from the source. A fresh child process (so its RSS is the diff's alone)
then runs ``merge_diff`` over ``source_entries`` and the index paged with ``list_page``,
counts each kind, spools the deletes to disk and reads them back, and reports elapsed seconds,
objects/s and peak RSS (``ru_maxrss``). The counts are asserted. Target: peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUCKET = "bench"
PAGE = 1000
TARGET_MB = 300


def kind_of(i: int) -> str:
    """Object ``i``'s role: changed (1%), new (0.5%), unchanged; ``gone`` adds a deleted row."""
    r = i % 200
    return "changed" if r < 2 else "new" if r == 2 else "gone" if r == 3 else "unchanged"


def name_of(i: int) -> str:
    return f"data/shard-{i // 10000:04d}/obj-{i:08d}.bin"


def gone_name(i: int) -> str:
    return name_of(i) + ".old"  # sorts right after name_of(i), before name_of(i + 1)


def source_dict(i: int) -> dict:
    return {"size": 4096 + i % 8192, "etag": f"{i * 2654435761 % (1 << 128):032x}",
            "last_modified": 1.7e9 + i}


def expected(n: int) -> dict[str, int]:
    counts = {"new": 0, "changed": 0, "deleted": 0, "unchanged": 0}
    for i in range(n):
        k = kind_of(i)
        if k == "gone":
            counts["deleted"] += 1
            counts["unchanged"] += 1
        else:
            counts[k] += 1
    return counts


def build_index(path: Path, n: int, batch: int = 10_000) -> tuple[int, float]:
    """Write the cached side: every source object but the new ones, plus the deleted ones."""
    from aisync.storage.index import ObjectIndex

    start = time.perf_counter()
    index = ObjectIndex(path)
    index.open()
    w = index._writer
    assert w is not None
    rows, count = [], 0
    # named columns: columns added to the schema later stay NULL
    insert = ("INSERT INTO objects(bucket, name, size, checksum, mtime_ns, source) "
              "VALUES (?, ?, ?, ?, ?, ?)")

    def row(name: str, d: dict) -> tuple:
        return (BUCKET, name.encode("utf-8", "surrogatepass"), d["size"], "0" * 16,
                int(d["last_modified"] * 1e9), json.dumps(d, separators=(",", ":")))

    w.execute("BEGIN")
    for i in range(n):
        k = kind_of(i)
        if k == "new":
            continue
        d = source_dict(i)
        if k == "changed":
            d = dict(d, etag=f"{int(d['etag'], 16) ^ 1:032x}")  # same size, another ETag
        rows.append(row(name_of(i), d))
        if k == "gone":
            rows.append(row(gone_name(i), source_dict(i)))
        if len(rows) >= batch:
            w.executemany(insert, rows)
            count += len(rows)
            rows.clear()
    if rows:
        w.executemany(insert, rows)
        count += len(rows)
    w.execute("COMMIT")
    index.close()
    return count, time.perf_counter() - start


class SyntheticBackend:
    """``list_page`` over ``n`` generated objects; the token is the next object's number."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def list_page(self, bucket: str, prefix: str = "", token: str | None = None,
                        limit: int = 1000):
        from aisync.backends.base import ListEntry, ListPage, VersionToken

        start = int(token or 0)
        end = min(start + limit, self.n)
        entries = [ListEntry(name_of(i), VersionToken(**source_dict(i)))
                   for i in range(start, end)]
        return ListPage(entries, str(end) if end < self.n else None)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


async def run_diff(index_path: Path, spool_dir: Path, n: int) -> dict:
    from aisync.backends.base import VersionToken
    from aisync.storage.index import ObjectIndex
    from aisync.sync.diff import DeleteSpool, merge_diff, source_entries

    index = ObjectIndex(index_path)
    assert not index.open(), "index unexpectedly needs a rebuild"
    pool = ThreadPoolExecutor(1, thread_name_prefix="index-reader")
    loop = asyncio.get_running_loop()

    async def cached_side():
        """The index in pages, read one page ahead in the reader thread."""
        pending = loop.run_in_executor(pool, index.list_page, BUCKET, "", None, PAGE)
        while True:
            page = await pending
            if len(page) == PAGE:
                pending = loop.run_in_executor(pool, index.list_page, BUCKET, "",
                                               page[-1].name, PAGE)
            for e in page:
                yield e.name, VersionToken.from_dict(e.source) if e.source else None
            if len(page) < PAGE:
                return

    baseline = peak_rss_mb()
    counts = {"new": 0, "changed": 0, "deleted": 0, "unchanged": 0}
    start = time.perf_counter()
    try:
        with DeleteSpool(spool_dir) as spool:
            source = source_entries(SyntheticBackend(n), BUCKET, page=PAGE)
            async for change in merge_diff(source, cached_side()):
                counts[change.kind] += 1
                if change.kind == "deleted":
                    spool.append(change)
            diff_s = time.perf_counter() - start
            spooled = 0
            async for change in spool.drain():
                assert change.kind == "deleted" and change.name.endswith(".old"), change
                spooled += 1
            assert spooled == len(spool) == counts["deleted"]
    finally:
        pool.shutdown()
        index.close()
    return {"objects": n, "counts": counts, "diff_s": diff_s,
            "total_s": time.perf_counter() - start, "baseline_rss_mb": baseline,
            "peak_rss_mb": peak_rss_mb()}


def child(args: argparse.Namespace) -> int:
    result = asyncio.run(run_diff(args.index, args.spool, args.objects))
    print(json.dumps(result))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--spool", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    n = args.objects
    work = Path(tempfile.mkdtemp(prefix="aisync-bench-diff-"))
    try:
        index_path, spool_dir = work / "index.db", work / "spool"
        spool_dir.mkdir()
        rows, build_s = build_index(index_path, n)
        print(f"# index: {rows:,} rows written in {build_s:.1f}s")
        out = subprocess.run([sys.executable, __file__, "--child", "--objects", str(n),
                              "--index", str(index_path), "--spool", str(spool_dir)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert not any(spool_dir.iterdir()), "delete spool left behind"
    finally:
        shutil.rmtree(work, ignore_errors=True)

    want = expected(n)
    counts = result["counts"]
    rate = n / result["diff_s"]
    print(f"# diff of {n:,} listed objects vs {rows:,} index rows (fresh process)")
    for kind in ("new", "changed", "deleted", "unchanged"):
        print(f"{kind:<10} {counts[kind]:>10,}  (expected {want[kind]:,})")
    print(f"diff       {result['diff_s']:>10.2f} s   {rate:,.0f} objects/s")
    print(f"diff+drain {result['total_s']:>10.2f} s")
    print(f"peak RSS   {result['peak_rss_mb']:>10.1f} MB  (before the diff: "
          f"{result['baseline_rss_mb']:.1f} MB; target < {TARGET_MB} MB)")
    assert counts == want, f"counts {counts} != expected {want}"
    result.update(index_rows=rows, build_s=build_s, objects_per_s=rate, target_mb=TARGET_MB)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if result["peak_rss_mb"] >= TARGET_MB:
        print(f"FAIL: peak RSS {result['peak_rss_mb']:.1f} MB >= {TARGET_MB} MB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
