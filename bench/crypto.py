"""Benchmark of the blob format v1 (Cobblestone-256) against a raw AES-GCM loop.

Streams a file (1 GiB by default, 64 MiB with ``--quick``) through ``envelope.encrypt_stream``
and ``envelope.decrypt_stream`` (file→file and file→null), and through a raw loop that seals the
same 16 KiB chunks with ``AESGCM.encrypt_into``/``decrypt_into`` and the same buffering, the
fastest plain pyca loop over that chunking. Each phase runs in a fresh subprocess so that its
peak RSS (VmHWM) is its own. No Django.

The ratios on the final line compare like with like: v1 file→null against raw file→null, the
case where any overhead of the format shows most, measured in CPU time of each phase's own
process, because the host is shared and wall-clock throughput drifts (wall figures are printed
too)::

    crypto encrypt_ratio=<v1/raw> decrypt_ratio=<v1/raw> peak_rss_mib=<max over v1 phases>

Run from the repository root: ``python bench/crypto.py [--quick] [--size-mib N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import mmap
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
CHUNK = 16 * 1024
SEALED = CHUNK + 16
BATCH = 64
KEY = bytes(range(32))
CONTEXT = b"kodori/bench"


class _Null:
    """A sink that discards, like /dev/null without the syscalls."""

    def write(self, data: memoryview) -> int:
        return len(data)


def _fill(source: io.RawIOBase, view: memoryview) -> int:
    total = 0
    while total < len(view):
        got = source.readinto(view[total:])
        if not got:
            break
        total += got
    return total


def raw_encrypt(source: io.RawIOBase, sink: io.RawIOBase | _Null) -> int:
    """Seal 16 KiB chunks with a counter nonce: the floor any format over this chunking pays."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seal = AESGCM(KEY).encrypt_into
    src = memoryview(mmap.mmap(-1, BATCH * CHUNK))
    dst = memoryview(mmap.mmap(-1, BATCH * SEALED))
    index = total = 0
    while True:
        got = _fill(source, src)
        full, last = divmod(got, CHUNK)
        s = d = 0
        for k in range(index, index + full):
            seal(k.to_bytes(12, "big"), src[s : s + CHUNK], b"", dst[d : d + SEALED])
            s += CHUNK
            d += SEALED
        index += full
        total += got
        if got < len(src):
            seal(index.to_bytes(12, "big"), src[s:got], b"", dst[d : d + last + 16])
            sink.write(dst[: d + last + 16])
            return total
        sink.write(dst[:d])


def raw_decrypt(source: io.RawIOBase, sink: io.RawIOBase | _Null) -> int:
    """Open what ``raw_encrypt`` wrote, chunk by chunk."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    open_ = AESGCM(KEY).decrypt_into
    src = memoryview(mmap.mmap(-1, BATCH * SEALED + 1))
    dst = memoryview(mmap.mmap(-1, BATCH * CHUNK))
    index = total = have = 0
    while True:
        have += _fill(source, src[have:])
        at_end = have < len(src)
        full = (have - 1) // SEALED if have else 0
        s = d = 0
        for k in range(index, index + full):
            open_(k.to_bytes(12, "big"), src[s : s + SEALED], b"", dst[d : d + CHUNK])
            s += SEALED
            d += CHUNK
        index += full
        if at_end:
            open_(index.to_bytes(12, "big"), src[s:have], b"", dst[d : d + have - s - 16])
            sink.write(dst[: d + have - s - 16])
            return total + d + have - s - 16
        sink.write(dst[:d])
        total += d
        src[: have - s] = src[s:have]
        have -= s


def v1_encrypt(source: io.RawIOBase, sink: io.RawIOBase | _Null) -> int:
    from encryption.format import envelope

    return envelope.encrypt_stream(KEY, CONTEXT, source, sink)


def v1_decrypt(source: io.RawIOBase, sink: io.RawIOBase | _Null) -> int:
    from encryption.format import envelope

    return envelope.decrypt_stream(KEY, CONTEXT, source, sink)


PHASES = {
    "raw_encrypt": raw_encrypt,
    "raw_decrypt": raw_decrypt,
    "v1_encrypt": v1_encrypt,
    "v1_decrypt": v1_decrypt,
}


def run_phase(name: str, source_path: str, sink_path: str, repeat: int) -> None:
    """Child process: run one phase ``repeat`` times; print best wall and CPU times, peak RSS."""
    sys.path.insert(0, str(REPO))
    func = PHASES[name]
    wall = cpu = float("inf")
    size = 0
    for _ in range(repeat):
        with Path(source_path).open("rb", buffering=0) as source, _open_sink(sink_path) as sink:
            started, started_cpu = time.perf_counter(), time.process_time()
            size = func(source, sink)
            wall = min(wall, time.perf_counter() - started)
            cpu = min(cpu, time.process_time() - started_cpu)
    figures = {"seconds": wall, "cpu_seconds": cpu, "plaintext": size, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(figures))


def _open_sink(path: str) -> AbstractContextManager[io.RawIOBase | _Null]:
    if path == "null":
        return nullcontext(_Null())
    return Path(path).open("wb", buffering=0)


def peak_rss_mib() -> float:
    """This process's own peak RSS.

    VmHWM belongs to the address space created by exec; ``ru_maxrss`` would also carry the
    parent's high-water mark at fork time across the exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase(name: str, source: Path, sink: Path | None, repeat: int) -> dict[str, float]:
    """Run one phase in a fresh interpreter and return its figures."""
    cmd = [sys.executable, __file__, "--phase", name, str(source), str(sink or "null"), str(repeat)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["mb_s"] = result["plaintext"] / result["seconds"] / 1e6
    result["cpu_mb_s"] = result["plaintext"] / result["cpu_seconds"] / 1e6
    return result


def make_input(path: Path, size: int) -> None:
    """Write ``size`` bytes of incompressible data (one random MiB, varied per block)."""
    block = bytearray(os.urandom(MIB))
    with path.open("wb") as out:
        for i in range(0, size, MIB):
            block[:8] = i.to_bytes(8, "big")
            out.write(block[: min(MIB, size - i)])


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        run_phase(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB (< 30 s)")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to put the temporary files")
    args = parser.parse_args()
    size_mib = args.size_mib or (64 if args.quick else 1024)
    # This 2-vCPU VM is shared with other work, and wall-clock throughput drifts by tens of
    # percent from one second to the next. So the phases are interleaved over several rounds,
    # each keeps its best, and the ratios on the final line use CPU time (user + system of the
    # phase's own process), which contention from other processes disturbs far less; the
    # wall-clock figures are printed too.
    rounds, repeat = (5, 2) if size_mib <= 128 else (3, 1)
    print(f"blob format v1 vs raw AES-256-GCM, 16 KiB chunks, {size_mib} MiB, {rounds} rounds x {repeat}")
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        files = {n: Path(tmp) / n for n in ("plain", "raw.ct", "v1.ct", "raw.back", "v1.back")}
        make_input(files["plain"], size_mib * MIB)
        plan: list[tuple[str, str, Path | None, dict[str, Path | None]]] = [
            ("encrypt", "file->file", files["plain"], {"raw": files["raw.ct"], "v1": files["v1.ct"]}),
            ("encrypt", "file->null", files["plain"], {"raw": None, "v1": None}),
            ("decrypt", "file->file", None, {"raw": files["raw.back"], "v1": files["v1.back"]}),
            ("decrypt", "file->null", None, {"raw": None, "v1": None}),
        ]
        for _ in range(rounds):
            for op, shape, source, sinks in plan:
                for impl in ("raw", "v1"):
                    result = phase(f"{impl}_{op}", source or files[f"{impl}.ct"], sinks[impl], repeat)
                    kept = best.setdefault(f"{impl}_{op} {shape}", result)
                    for field in ("mb_s", "cpu_mb_s", "peak_rss_mib"):
                        kept[field] = max(kept[field], result[field])
        for impl in ("raw", "v1"):
            if _digest(files[f"{impl}.back"]) != _digest(files["plain"]):
                raise SystemExit(f"{impl} round trip mismatch")
    print(f"{'phase':26s} {'wall MB/s':>10s} {'CPU MB/s':>10s} {'peak RSS':>10s}")
    for key, r in best.items():
        print(f"{key:26s} {r['mb_s']:10.0f} {r['cpu_mb_s']:10.0f} {r['peak_rss_mib']:6.1f} MiB")

    def ratio(op: str, shape: str, field: str = "cpu_mb_s") -> float:
        return best[f"v1_{op} {shape}"][field] / best[f"raw_{op} {shape}"][field]

    for op in ("encrypt", "decrypt"):
        for shape in ("file->file", "file->null"):
            print(f"v1/raw {op} {shape}: CPU {ratio(op, shape):.2f}  wall {ratio(op, shape, 'mb_s'):.2f}")
    enc, dec = ratio("encrypt", "file->null"), ratio("decrypt", "file->null")
    peak = max(v["peak_rss_mib"] for k, v in best.items() if k.startswith("v1_"))
    print(f"crypto encrypt_ratio={enc:.2f} decrypt_ratio={dec:.2f} peak_rss_mib={peak:.0f}")


if __name__ == "__main__":
    main()
