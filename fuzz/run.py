"""Run every fuzz harness for a bounded time and report executions and crashes per harness.

    python -m fuzz.run --seconds 5                       # CI: each harness ~5 s (fuzz/README.md)
    nice -n 19 python -m fuzz.run --grow 600 --seconds 1800 --json bench/results/fuzz_long.json

The kernel harnesses run against the ASan+UBSan build named by ``--san-build`` (``make test-san``
builds it), with gcc's sanitizer runtime preloaded. Under that runtime libFuzzer gets no coverage
(the hooks resolve to the sanitizer's stubs), so ``--grow`` first grows a corpus per kernel with
coverage on the installed build; the sanitizer run then starts from that corpus and mutates it. The
HTTP and tokenisation harnesses call no C of ours and run with coverage on the plain interpreter.
A harness that crashes leaves its input as ``crash-*`` in the corpus folder and fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from fuzz.fuzz_kernels import HARNESSES as KERNEL_HARNESSES

REPO = Path(__file__).resolve().parents[1]
PYTHON_HARNESSES = {"http": "fuzz.fuzz_http", "tokenization": "fuzz.fuzz_tokenization"}
_DONE = re.compile(r"^#(\d+)\s+(?:DONE|pulse|NEW|REDUCE)", re.MULTILINE)


def _sanitizer_env(build: Path) -> dict[str, str]:
    runtime = subprocess.run([os.environ.get("CC", "cc"), "-print-file-name=libasan.so"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return {
        "ENGINE_KERNELS_PATH": str(build),
        "LD_PRELOAD": runtime,
        # detect_leaks: CPython keeps its objects to exit; allocator_may_return_null: a huge request
        # must reach the kernel's own MemoryError path instead of ASan aborting the process.
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }


def _run(module: str, name: str | None, corpus: Path, seconds: int, env: dict[str, str],
         extra: list[str]) -> dict[str, object]:
    corpus.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, *([name] if name else []), str(corpus),
               f"-max_total_time={seconds}", f"-artifact_prefix={corpus}/", "-print_final_stats=1", "-timeout=60", *extra]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=seconds * 2 + 300)
        log, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:  # libFuzzer's own -timeout should have fired first
        output = expired.output or b""
        log = (output.decode(errors="replace") if isinstance(output, bytes) else output) + "\n[killed: over time]"
        returncode = -9
    counts = [int(match) for match in _DONE.findall(log)]
    stats = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    executions = int(stats.group(1)) if stats else max(counts, default=0)
    crashed = returncode != 0
    result: dict[str, object] = {"executions": executions, "crashes": int(crashed), "seconds": round(time.monotonic() - started, 1),
                                 "returncode": returncode}
    if crashed:
        result["log_tail"] = log[-4000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="sanitizer/plain run per harness")
    parser.add_argument("--grow", type=int, default=0, help="coverage-guided corpus growth per kernel first")
    parser.add_argument("--san-build", default="build/san", help="folder with the ASan+UBSan _kernels build")
    parser.add_argument("--corpus", default=os.environ.get("FUZZ_CORPUS", "/tmp/engine-fuzz-corpus"))
    parser.add_argument("--only", nargs="*", help="harness names (default: all)")
    parser.add_argument("--json", help="write the per-harness results here")
    args = parser.parse_args(argv)
    corpus_root = Path(args.corpus)
    san_env = _sanitizer_env(REPO / args.san_build)
    wanted = set(args.only or [*KERNEL_HARNESSES, *PYTHON_HARNESSES])
    # Large inputs from the start: no coverage under the sanitizer means libFuzzer would never raise the limit.
    kernel_flags = ["-len_control=0", "-max_len=4096", "-rss_limit_mb=4096"]
    results: dict[str, dict[str, object]] = {}
    for name in KERNEL_HARNESSES:
        if name not in wanted:
            continue
        corpus = corpus_root / name
        if args.grow:
            results[f"{name} (coverage, release build)"] = _run("fuzz.fuzz_kernels", name, corpus, args.grow, {}, [])
        results[f"{name} (ASan+UBSan)"] = _run("fuzz.fuzz_kernels", name, corpus, args.seconds, san_env, kernel_flags)
    for name, module in PYTHON_HARNESSES.items():
        if name in wanted:
            results[name] = _run(module, None, corpus_root / name, args.seconds, {}, [])
    total = sum(int(result["executions"]) for result in results.values())
    crashes = sum(int(result["crashes"]) for result in results.values())
    for name, result in results.items():
        print(f"{name:40s} {result['executions']:>10} executions  {result['crashes']} crashes  {result['seconds']} s")
        if result["crashes"]:
            print(result["log_tail"], file=sys.stderr)
    print(f"{'total':40s} {total:>10} executions  {crashes} crashes")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"total_executions": total, "crashes": crashes, "harnesses": results},
                                              indent=2) + "\n")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
