"""Time from process start (or window shown) to the first generated token, with numba's cache warm and empty.

    python bench/startup.py [MODEL ...] [--threads 2] [--runs 3] [--cold] [--window] [--python PY]

For each model, starts ``python -c`` processes that load it with ``engine.load_model`` and
evaluate a 16-token prompt and pick the first token; the parent measures from just before it
starts each process to the moment the child reports its token on stdout. Without ``--cold`` the
cache is the user's (warmed first), best of ``--runs``.

``--cold`` runs each start in a fresh cache folder (a temporary ``NEOX_WRITER_HOME`` and HOME),
which is what the first start after installing costs, once per backend: ``fast`` (compile every
kernel first: the old first start) and ``staged`` (the program's: the starter writes while a
child compiles). For staged it also reports when the fast kernels were ready. ``--window`` adds
the window: ``neox-writer --time-first-token`` started with an empty cache (offscreen), from the
moment the window is shown to the first token of the story's first Generate, and when the fast
kernels took over; ``--bundle EXE`` times a PyInstaller bundle's window that way (``--backends ''``
skips the engine rows, which need a Python).
Default model: the bundled demo model. ``--python`` runs the children with another interpreter, from
a temporary folder, so they import the program installed there (a wheel in a fresh virtual
environment) rather than this source tree.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
import numpy as np
from engine import load_model
model = load_model(sys.argv[1], backend=sys.argv[3], threads=int(sys.argv[2]))
logits = model.new_session(64).eval(list(range(100, 116)))
print(int(np.argmax(logits)), model.backend_name, flush=True)
staged = model.staged
if staged is not None and staged.wait_ready(900):
    print(f"fast {time.time() - float(sys.argv[4]):.2f}", flush=True)
"""

# the interpreter of the children and their folder: this tree's, or (--python) an installation's
CHILD_PYTHON = {"python": sys.executable, "cwd": str(ROOT)}


def run_child(command: list[str], env: dict) -> tuple[float, list[str]]:
    """Seconds from start to the child's first line, and all its lines."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=CHILD_PYTHON["cwd"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    rest, err = proc.communicate()
    if proc.returncode != 0 or not first.strip():
        raise SystemExit(f"the child failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return elapsed, [first.strip()] + rest.strip().splitlines()


def cold_env(home: str) -> dict:
    env = dict(os.environ, NEOX_WRITER_HOME=home, HOME=home, QT_QPA_PLATFORM="offscreen")
    env.pop("NUMBA_CACHE_DIR", None)
    return env


def engine_start(model: str, threads: int, backend: str, env: dict) -> tuple[float, str, str]:
    """(seconds to the first token, the backend that made it, when the fast kernels were ready or '')."""
    elapsed, lines = run_child([CHILD_PYTHON["python"], "-c", CHILD, model, str(threads), backend, repr(time.time())],
                               env)
    fast = next((line.split()[1] for line in lines[1:] if line.startswith("fast ")), "")
    return elapsed, lines[0].split()[1], fast


def window_start(model: str, env: dict, bundle: str | None = None) -> dict:
    """The window's first start, timed by the program itself (``--time-first-token``): seconds from
    the process start to the window shown, and from shown to the first token and to full speed."""
    program = [os.path.abspath(bundle)] if bundle else [CHILD_PYTHON["python"], "-m", "app"]
    started = time.time()
    _, lines = run_child([*program, "--time-first-token", "--model", model], env)
    times = {line.split()[0]: float(line.split()[1]) for line in lines if len(line.split()) == 2}
    if "fast" not in times:
        raise SystemExit("the window did not report its first token and full speed: " + " / ".join(lines))
    times["shown"] = times.pop("shown_at") - started
    return times


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="time first starts with an empty numba cache")
    ap.add_argument("--window", action="store_true", help="with --cold: also the window's first start")
    ap.add_argument("--backends", default="staged,fast", help="with --cold: the engine's starts to time")
    ap.add_argument("--python", help="the interpreter of an installation to time (run from a temporary folder)")
    ap.add_argument("--bundle", metavar="EXE", help="with --cold --window: time this bundle's window (e.g. "
                    "dist/NeoXWriter/neox-writer) instead of the source tree's or --python's")
    args = ap.parse_args(argv)
    if args.python or args.bundle:
        CHILD_PYTHON.update(python=args.python or sys.executable, cwd=tempfile.mkdtemp(prefix="neox-startup-"))
    sys.path.insert(0, str(ROOT))
    from app.bundled import demo_model
    models = args.models or [str(demo_model())]
    print(f"threads {args.threads}, load average {load_average()} at the start")
    if args.cold:
        print("| model | start | first token s | on | full speed s | load average |")
        print("| --- | --- | --- | --- | --- | --- |")
        for model in models:
            name = Path(model).name
            for backend in filter(None, args.backends.split(",")):
                with tempfile.TemporaryDirectory() as home:
                    seconds, on, fast = engine_start(model, args.threads, backend, cold_env(home))
                print(f"| {name} | engine, {backend}, from process start | {seconds:.2f} | {on} | "
                      f"{fast or f'{seconds:.2f}'} | {load_average()} |", flush=True)
            if args.window:
                with tempfile.TemporaryDirectory() as home:
                    w = window_start(model, cold_env(home), args.bundle)
                where = "bundle window" if args.bundle else "window"
                print(f"| {name} | {where}, from shown (shown {w['shown']:.2f} s after start) | {w['first']:.2f} | "
                      f"starter | {w['fast']:.2f} | {load_average()} |", flush=True)
        return 0
    env = dict(os.environ)
    print("| model | warm cache: first token s (best of runs) | all | load average |")
    print("| --- | --- | --- | --- |")
    for model in models:
        engine_start(model, args.threads, "fast", env)              # make sure the real cache is warm
        warm = [engine_start(model, args.threads, "fast", env)[0] for _ in range(args.runs)]
        print(f"| {Path(model).name} | {min(warm):.2f} | {', '.join(f'{w:.2f}' for w in warm)} | {load_average()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
