"""The long fuzz run: ``python -m tests.fuzz --minutes N`` (see tests/fuzz/__init__.py).

The parent starts `--workers` child processes (``--worker`` mode); each cycles through the targets
with its own seeded stream of mutations and prints its counts as JSON lines. A child that dies
(a crash in compiled code) or goes silent for longer than the case limit allows (a hang) is
replaced, and the input it was working on, which is still in its work folder, is kept as a
finding. Findings go to ``--out`` (default ``tests/fuzz/findings/``, ignored by git), one
``.bin`` with the input and one ``.txt`` with the problem each; the run ends with a table.

Run it niced on a shared machine:  nice -n 19 python -m tests.fuzz --minutes 60
Replay one input:                   python -m tests.fuzz --replay ggml FILE
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import MAX_SECONDS, MAX_WALL_SECONDS, Finding, Tally, run_case, warm_up
from .mutate import RandomChooser
from .targets import ALL_TARGETS, MODEL_TARGETS

# Share of the cases each target gets: the model files are the slow ones and the issue asks for
# as many mutated model files as stories.
WEIGHTS = {"ggml": 6, "safetensors": 2, "safetensors-index": 1, "torch-pickle": 3, "story": 10, "autosave": 2,
           "manifest": 1, "catalog": 1, "catalog-cache": 1, "settings": 1, "tokenizer-json": 1, "hf-folder": 1}
MODEL_NAMES = {t.name for t in MODEL_TARGETS}
STORY_NAMES = {"story", "autosave"}
REPORT_EVERY = 2.0        # seconds between a worker's count lines
# A worker is hung when it has computed this many CPU seconds without a line (a case in a loop),
# or been silent this long however busy the machine is (a case blocked).
# silence allowed before a worker counts as hung: a case's limit plus a first compilation of a
# specialisation the seeds did not need (up to a couple of minutes on a loaded machine)
SILENT_CPU = 3 * MAX_SECONDS + 180
SILENT_WALL = 10 * MAX_WALL_SECONDS


def worker(names: list[str], seed: int, deadline: float, workdir: Path) -> None:
    """Run cases until the deadline; print a JSON line of counts now and then, and each finding."""
    targets = [ALL_TARGETS[n]() for n in names]
    rng = random.Random(seed)
    ch = RandomChooser(rng)
    for t in targets:
        (workdir / t.name).mkdir(exist_ok=True)
        warm_up(t, workdir / t.name, ch)
    tallies = {t.name: Tally() for t in targets}
    weights = [WEIGHTS.get(t.name, 1) for t in targets]
    print(json.dumps({"warm": True}), flush=True)
    last = time.monotonic()
    while time.time() < deadline:
        target = rng.choices(targets, weights)[0]
        seed_name, data = target.mutate(ch)
        try:
            tallies[target.name].add(run_case(target, data, workdir / target.name, ch, seed_name))
        except Finding as f:
            tallies[target.name].cases += 1
            print(json.dumps({"finding": {"target": f.target, "seed": f.seed, "problem": f.problem,
                                          "data": f.data.hex()}}), flush=True)
        if time.monotonic() - last > REPORT_EVERY:
            last = time.monotonic()
            print(json.dumps({"counts": {n: vars(t) | {"findings": []} for n, t in tallies.items()}}), flush=True)
    print(json.dumps({"counts": {n: vars(t) | {"findings": []} for n, t in tallies.items()}, "done": True}), flush=True)


class Child:
    """One worker process and what it last reported."""

    def __init__(self, names, seed, deadline, root: Path):
        self.seed = seed
        self.workdir = Path(tempfile.mkdtemp(prefix=f"worker{seed}-", dir=root))
        self.stderr = open(self.workdir.with_suffix(".stderr"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz", "--worker", ",".join(names),
                                      "--seed", str(seed), "--deadline", str(deadline),
                                      "--workdir", str(self.workdir)],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     cwd=Path(__file__).resolve().parents[2])
        self.counts: dict = {}
        self.warm = False
        self.done = False
        self.heard()

    def heard(self) -> None:
        self.heard_at, self.heard_cpu = time.monotonic(), self.cpu()

    def cpu(self) -> float:
        """The worker's CPU seconds so far (Linux /proc; 0 elsewhere, leaving the wall-clock rule)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def hung(self) -> bool:
        return self.warm and (self.cpu() - self.heard_cpu > SILENT_CPU
                              or time.monotonic() - self.heard_at > SILENT_WALL)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]


def save_finding(out: Path, target: str, seed: str, problem: str, data: bytes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{target}-{int(time.time() * 1000)}-{len(data)}"
    stem.with_suffix(".bin").write_bytes(data)
    stem.with_suffix(".txt").write_text(f"target: {target}\nseed file: {seed}\n\n{problem}\n")
    return stem.with_suffix(".bin")


def last_input(child: Child) -> tuple[str, bytes] | None:
    """The case a dead or hung worker was running: the newest file of its work folder."""
    files = [p for p in child.workdir.rglob("*") if p.is_file()]
    if not files:
        return None
    newest = max(files, key=lambda p: p.stat().st_mtime)
    return newest.parent.name, newest.read_bytes()


def run(args) -> int:
    names = args.targets.split(",") if args.targets else list(ALL_TARGETS)
    deadline = time.time() + args.minutes * 60
    out = Path(args.out)
    findings = 0
    totals: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="neox-fuzz-") as root:
        root = Path(root)
        next_seed = args.seed
        children = []
        for _ in range(args.workers):
            children.append(Child(names, next_seed, deadline, root))
            next_seed += 1
        while children:
            for child in list(children):
                ready, _, _ = select.select([child.proc.stdout], [], [], 0.2)
                line = child.proc.stdout.readline() if ready else ""
                if line:
                    child.heard()
                    msg = json.loads(line)
                    child.warm = child.warm or msg.get("warm", False)
                    if "counts" in msg:
                        child.counts = msg["counts"]
                        child.done = msg.get("done", False)
                    if "finding" in msg:
                        f = msg["finding"]
                        findings += 1
                        path = save_finding(out, f["target"], f["seed"], f["problem"], bytes.fromhex(f["data"]))
                        print(f"FINDING {f['target']}: {f['problem'].splitlines()[0]} -> {path}", flush=True)
                    continue
                dead = child.proc.poll() is not None
                hung = not dead and child.hung()
                if not (dead or hung):
                    continue
                if hung:
                    child.proc.kill()
                child.proc.wait()
                for name, counts in child.counts.items():
                    total = totals.setdefault(name, {"cases": 0, "loaded": 0, "refused": 0, "slowest": 0.0, "peak": 0})
                    for k in ("cases", "loaded", "refused"):
                        total[k] += counts[k]
                    total["slowest"] = max(total["slowest"], counts["slowest"])
                    total["peak"] = max(total["peak"], counts["peak"])
                children.remove(child)
                if not child.done:
                    case = last_input(child)
                    findings += 1
                    problem = (f"worker hung (no report for {SILENT_CPU:.0f} CPU s or {SILENT_WALL:.0f} s)" if hung
                               else f"worker died with exit status {child.proc.returncode}:\n{child.stderr_tail()}")
                    if case is not None:
                        path = save_finding(out, case[0], "?", problem, case[1])
                        print(f"FINDING {case[0]}: {problem} -> {path}", flush=True)
                    else:
                        print(f"FINDING: {problem} before its first case", flush=True)
                    if child.warm and time.time() < deadline - 30:     # (a seed that fails stops the run)
                        children.append(Child(names, next_seed, deadline, root))
                        next_seed += 1
    print_table(totals, findings, args)
    return 1 if findings else 0


def print_table(totals: dict, findings: int, args) -> None:
    print(f"\nfuzz run: {args.minutes:g} min, {args.workers} worker(s), seed {args.seed}")
    print(f"{'target':<18} {'cases':>9} {'loaded':>9} {'refused':>9} {'max CPU s':>10} {'peak MiB':>9}")
    for name in sorted(totals):
        t = totals[name]
        print(f"{name:<18} {t['cases']:>9} {t['loaded']:>9} {t['refused']:>9} {t['slowest']:>10.3f} "
              f"{t['peak'] / 2**20:>9.2f}")
    models = sum(t["cases"] for n, t in totals.items() if n in MODEL_NAMES)
    stories = sum(t["cases"] for n, t in totals.items() if n in STORY_NAMES)
    print(f"model files: {models}   story files: {stories}   findings: {findings}")


def replay(target_name: str, path: Path) -> int:
    target = ALL_TARGETS[target_name]()
    ch = RandomChooser(random.Random(0))
    with tempfile.TemporaryDirectory() as workdir:
        try:
            outcome = run_case(target, path.read_bytes(), Path(workdir), ch, path.name, timed=False)
        except Finding as f:
            print(f"FINDING: {f.problem}")
            return 1
    print(f"{outcome.kind} in {outcome.seconds:.3f} s, reader peak {outcome.peak / 2**20:.2f} MiB {outcome.message}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--targets", default="", help=f"comma-separated subset of {', '.join(ALL_TARGETS)}")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "findings"))
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "FILE"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker.split(","), args.seed, args.deadline, Path(args.workdir))
        return 0
    if args.replay:
        return replay(args.replay[0], Path(args.replay[1]))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
