"""Benchmark: putting data on a volume, and preparing it there with parallel shares.

Upload: the verified, resumable protocol (``whisper_k8s.transfer``: sha256 on both sides, fsync and rename per
file, a manifest journal) through the local backend's transport (a receiver process fed by a pipe), against
the plain copy ``tar -cf - . | tar -xf -`` of the same tree (no verification, no fsync), and the same followed
by ``sync -f`` (the data on disk, as the protocol guarantees per file), measured in the same run. Two trees: "shards" (a synthetic Common Voice tree plus a few large files, like CV's tar shards) and
"small files" (thousands of small files: the per-file cost). Also timed: a rerun that finds everything there
(the manifest plan only). Each figure is the best of ``--repeats`` runs, wall time (the transfer is I/O and
hashing across two processes). The Kubernetes transport is measured on the shards tree through the real
kubernetes client's exec websocket against the loopback exec endpoint of the tests (tests/k8s_exec_server.py,
a Python websocket server: a lower bound, since a real API server and kubelet unmask frames in Go). The docker
transport (``docker run -i``) is measured once the docker backend uses this protocol.

Prepare: ``dataset prepare --parallel N`` (N local processes, what N pods of the Indexed Job run) on one
synthetic Common Voice tree, for N = 1, 2, ...: wall time and samples per second, process start-up included
(each share imports torch and plans the whole run, as a pod does).

Writes bench/results/upload.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
RESULTS = ROOT / "bench" / "results" / "upload.json"


def tree_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def make_trees(work: Path, large_mib: int, small_files: int) -> dict[str, Path]:
    from whisper_k8s.dataset.synth import synthesize

    shards = work / "shards"
    synthesize(shards, lang="en", train=32, test=8, seed=0)
    for index in range(4):
        with open(shards / f"large-{index}.bin", "wb") as out:
            for _ in range(large_mib // 4):
                out.write(os.urandom(1 << 20))
    small = work / "small"
    for index in range(small_files):
        folder = small / f"{index // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{index:05d}.bin").write_bytes(os.urandom(8192))
    return {"shards": shards, "small files": small}


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_upload(trees: dict[str, Path], work: Path, repeats: int) -> dict:
    from whisper_k8s.transfer.send import upload
    from whisper_k8s.transfer.transport import local_transport

    results = {}
    for name, src in trees.items():
        files, size = tree_bytes(src)
        ours, plain, synced, rerun = [], [], [], []
        for attempt in range(repeats):
            dest = work / f"dest-{attempt}"
            ours.append(timed(lambda src=src, dest=dest: upload(src, local_transport("bench"), str(dest),
                                                                  quiet=True)))
            rerun.append(timed(lambda src=src, dest=dest: upload(src, local_transport("bench"), str(dest),
                                                                   quiet=True)))
            shutil.rmtree(dest)
            dest.mkdir()
            plain.append(timed(lambda src=src, dest=dest: subprocess.run(
                f"tar -C '{src}' -cf - . | tar -C '{dest}' -xf -", shell=True, check=True)))  # noqa: S602
            shutil.rmtree(dest)
            dest.mkdir()
            synced.append(timed(lambda src=src, dest=dest: subprocess.run(
                f"tar -C '{src}' -cf - . | tar -C '{dest}' -xf - && sync -f '{dest}'", shell=True,  # noqa: S602
                check=True)))
            shutil.rmtree(dest)
        best, baseline = min(ours), min(plain)
        results[name] = {
            "files": files, "bytes": size,
            "protocol_seconds": round(best, 3), "protocol_mib_per_s": round(size / best / 2**20, 1),
            "tar_pipe_seconds": round(baseline, 3), "tar_pipe_mib_per_s": round(size / baseline / 2**20, 1),
            "protocol_vs_tar_pipe": round(baseline / best, 2),
            "tar_pipe_then_sync_seconds": round(min(synced), 3),
            "tar_pipe_then_sync_mib_per_s": round(size / min(synced) / 2**20, 1),
            "rerun_nothing_to_send_seconds": round(min(rerun), 3),
        }
        print(f"upload {name}: {files} files, {size / 2**20:.1f} MiB: protocol {size / best / 2**20:.1f} MiB/s "
              f"({best:.2f} s), tar | tar {size / baseline / 2**20:.1f} MiB/s ({baseline:.2f} s) -> "
              f"{baseline / best:.2f}x of the plain copy; tar | tar then sync {size / min(synced) / 2**20:.1f} MiB/s; "
              f"rerun with nothing to send {min(rerun):.2f} s")
    return results


def bench_exec(src: Path, work: Path) -> dict:
    from k8s_exec_server import ExecServer
    from kubernetes import client

    from whisper_k8s.transfer.exec_channel import ExecTransport
    from whisper_k8s.transfer.send import upload

    server = ExecServer()
    try:
        transport = ExecTransport(client.ApiClient(client.Configuration(host=server.host)), "bench", "default",
                                  "upload", "bench")
        seconds = timed(lambda: upload(src, transport, str(work / "dest-exec"), quiet=True))
    finally:
        server.shutdown()
    size = tree_bytes(src)[1]
    print(f"upload shards through the exec websocket (loopback endpoint): {size / seconds / 2**20:.1f} MiB/s")
    return {"seconds": round(seconds, 3), "mib_per_s": round(size / seconds / 2**20, 1)}


def bench_prepare(work: Path, clips: int, shares: list[int], processor: Path) -> dict:
    from whisper_k8s.dataset.synth import synthesize

    source = work / "cv-prepare"
    synthesize(source, lang="en", train=clips, test=0, seed=1)
    results = {}
    for count in shares:
        out = work / f"prepared-{count}"
        argv = [sys.executable, "-m", "whisper_k8s", "dataset", "prepare", "--source", str(source), "--out",
                str(out), "--lang", "en", "--split", "train", "--processor", str(processor), "--preset", "large-v3",
                "--shard-size", str(max(1, clips // 8)), "--parallel", str(count), "--workers", "1"]
        started = time.perf_counter()
        shown = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        seconds = time.perf_counter() - started
        share = max(float(line.rsplit(" in ", 1)[1].split()[0]) for line in shown.splitlines()
                    if line.startswith("share "))  # plan + shards of the slowest share, imports excluded
        results[str(count)] = {"seconds": round(seconds, 2), "samples_per_s": round(clips / seconds, 2),
                               "slowest_share_seconds": round(share, 2)}
        print(f"prepare {clips} clips (8 shards) with {count} share(s): {seconds:.1f} s, {clips / seconds:.1f} "
              f"samples/s (start-up included); slowest share {share:.1f} s after its imports")
        shutil.rmtree(out)
    return results


def main() -> None:
    from host import host_info

    from whisper_k8s.assets.processor import write_processor

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large-mib", type=int, default=256, help="MiB of large files in the shards tree")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=1024, help="clips prepared per run")
    parser.add_argument("--shares", default="1,2", help="numbers of parallel prepare shares (comma list)")
    args = parser.parse_args()
    env_path = os.pathsep.join([str(ROOT), str(ROOT / "trainer"), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = env_path
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        work = Path(tmp)
        host = host_info()
        trees = make_trees(work, args.large_mib, args.small_files)
        upload = bench_upload(trees, work, args.repeats)
        upload["shards"]["exec_websocket_loopback"] = bench_exec(trees["shards"], work)
        processor = write_processor(work / "processor", variant="large-v3")
        prepare = bench_prepare(work, args.clips, [int(n) for n in args.shares.split(",")], processor)
    RESULTS.write_text(json.dumps({
        "benchmark": "upload", "host": host, "transport": "local process (pipe)",
        "upload": upload, "prepare_parallel": {"clips": args.clips, "shares": prepare},
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
