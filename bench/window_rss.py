"""Resident memory of the window after generating: `python bench/window_rss.py [MODEL] [--tokens 400]`.

Starts the program's window (offscreen, a temporary settings folder, the user's numba cache so
the kernels are warm), opens MODEL (default: bench/out/pythia-70M-q4_0-v2.bin, with the demo model's tokenizer), writes --tokens
tokens into the story through the Generate button, and prints the process's resident memory
after the window showed, after the load and after the generation, then where it is (from
/proc/self/smaps): anonymous memory (Python objects, numpy arrays, the repacked weights, the KV
cache), the heap, the model file, libllvmlite (LLVM: numba's compiler), Qt's libraries, Python's
and numpy's libraries, other libraries. Linux only.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return -1.0


def where(model: str) -> list[tuple[str, float]]:
    """Resident MiB by kind of mapping."""
    kinds: collections.Counter = collections.Counter()
    kind = "anonymous"
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                name = path.rsplit("/", 1)[-1]
                if not path or path.startswith("[anon") or path == "[stack]":
                    kind = "anonymous"
                elif path == "[heap]":
                    kind = "heap (malloc)"
                elif os.path.realpath(path) == os.path.realpath(model):
                    kind = "model file (mapped)"
                elif "llvmlite" in name:
                    kind = "libllvmlite (LLVM)"
                elif "Qt" in name or "PySide" in path or "shiboken" in path or "libicu" in name:
                    kind = "Qt, PySide6, ICU"
                elif "python" in name or "numpy" in path or "openblas" in name:
                    kind = "Python, numpy, BLAS"
                else:
                    kind = "other libraries and files"
            elif line.startswith("Rss:"):
                kinds[kind] += int(line.split()[1]) / 1024
    return kinds.most_common()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "bench" / "out" / "pythia-70M-q4_0-v2.bin"))
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--backend", default="staged")
    ap.add_argument("--tokenizer", default=str(ROOT / "resources" / "demo" / "tokenizer.json"),
                    help="the random-weight files have no usable vocabulary (default: the demo model's tokenizer)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    import engine.fast  # noqa: F401  (fixes numba's cache folder, the user's, before the settings move)
    os.environ["NEOX_WRITER_HOME"] = tempfile.mkdtemp(prefix="neox-window-rss-")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QSpinBox, QWidget

    from app.window.mainwindow import MainWindow

    app = QApplication(sys.argv[:1])
    window = MainWindow(backend=args.backend, check_recovery=False)
    window.show()
    app.processEvents()
    figures = [("window shown", rss_mib())]
    done = {}

    def on_loaded(info):
        figures.append((f"model loaded ({info.get('backend')})", rss_mib()))
        window.story_view.setPlainText("It was a dark and stormy night; the rain fell in torrents")
        window.findChild(QSpinBox, "maxTokensSpin").setValue(args.tokens)
        window.findChild(QSpinBox, "seedSpin").setValue(1)
        window.findChild(QWidget, "generateButton").click()

    def on_finished(generated):
        done["tokens"] = generated.gen_tokens
        QTimer.singleShot(500, app.quit)         # the view settles (its batches, the status bar)

    def on_failed(message):
        print(f"the model did not load: {message}", file=sys.stderr)
        app.quit()

    window.modelLoaded.connect(on_loaded)
    window.modelLoadFailed.connect(on_failed)
    window.errorShown.connect(on_failed)
    window.generationFinished.connect(on_finished)
    window.open_model(args.model, args.tokenizer)
    QTimer.singleShot(600_000, app.quit)
    app.exec()
    figures.append((f"after {done.get('tokens', '?')} generated tokens", rss_mib()))
    print(f"{Path(args.model).name}, backend {args.backend}, load average "
          + "/".join(f"{v:.1f}" for v in os.getloadavg()))
    print("| moment | RSS MiB |")
    print("| --- | --- |")
    for moment, mib in figures:
        print(f"| {moment} | {mib:.0f} |")
    print("\n| resident in | MiB |")
    print("| --- | --- |")
    for kind, mib in where(args.model):
        print(f"| {kind} | {mib:.0f} |")
    window.shutdown()
    return 0 if "tokens" in done else 1


if __name__ == "__main__":
    sys.exit(main())
