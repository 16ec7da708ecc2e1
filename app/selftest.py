"""``neox-writer --self-test [--model PATH] [--report FILE]``: prove an installation (or a bundle) works.

It loads the bundled demo model (or the given one) and generates 16 tokens through the same
worker thread the GUI uses (``app.chatllm.ChatLLM``, on the program's staged backend), with no
window and no display needed, checks that the spelling dictionary reads (a data file a bundle must
carry), then prints a one-line report with the time from the start of the self-test to the first
token, and exits 0, or exits 1 with the reason. ``--report`` also writes the
line to a file, for the Windows bundle, which has no console.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SELF_TEST_TOKENS = 16
TIMEOUT_S = 600          # a first start may compile the numba kernels; that takes a while


def _report(line: str, report_file: str | None) -> None:
    if sys.stdout is not None:
        print(line, flush=True)
    if report_file:
        Path(report_file).write_text(line + "\n", encoding="utf-8")


def run_self_test(model: str | None, report_file: str | None = None) -> int:
    """Returns the exit code; never raises for an expected failure."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    t_start = time.perf_counter()
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from app.chatllm import ChatLLM, GenerationRequest
    from app.bundled import demo_model
    from engine.sampling import SamplerSettings

    path = model or (str(demo_model()) if demo_model() else None)
    if not path:
        _report("self-test FAILED: no model given and no bundled demo model found", report_file)
        return 1

    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])
    llm = ChatLLM(backend="staged")       # as the window: a first start writes before the kernels compile
    loop = QEventLoop()
    state = {"info": None, "error": None, "pieces": [], "done": None, "first": None}

    def finish(*_):
        loop.quit()

    def on_loaded(info):
        state["info"] = info
        loop.quit()

    def on_load_failed(_path, message):
        state["error"] = f"cannot load {path}: {message}"
        loop.quit()

    def on_tokens(_rid, pieces):
        if not state["pieces"]:
            state["first"] = time.perf_counter()
        state["pieces"].extend(pieces)

    def on_finished(_rid, done):
        state["done"] = done
        loop.quit()

    def on_failed(_rid, message):
        state["error"] = f"generation failed: {message}"
        loop.quit()

    llm.worker.modelLoaded.connect(on_loaded)
    llm.worker.loadFailed.connect(on_load_failed)
    llm.worker.tokensReady.connect(on_tokens)
    llm.worker.generationFinished.connect(on_finished)
    llm.worker.generationFailed.connect(on_failed)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(finish)
    try:
        timer.start(TIMEOUT_S * 1000)
        llm.load(path)
        loop.exec()
        if state["error"] or state["info"] is None:
            _report("self-test FAILED: " + (state["error"] or f"loading {path} timed out"), report_file)
            return 1
        t_loaded = time.perf_counter()
        settings = SamplerSettings.from_preset("Deterministic")
        llm.generate(GenerationRequest(request_id=1, text="It was a truth universally acknowledged",
                                       settings=settings, max_new_tokens=SELF_TEST_TOKENS))
        timer.start(TIMEOUT_S * 1000)
        loop.exec()
        if state["error"] or state["done"] is None:
            _report("self-test FAILED: " + (state["error"] or "generation timed out"), report_file)
            return 1
        n = len(state["pieces"])
        if n == 0:
            _report("self-test FAILED: the model produced no tokens", report_file)
            return 1
        try:                         # the spelling dictionaries are data files: a bundle must carry them
            from app.spelling import Speller
            spelling = "spelling ok" if Speller.load("en").misspelt("The sea was clam, teh end.") == [(18, 3)] \
                else "spelling WRONG"
        except Exception as e:   # noqa: BLE001 - reported, not raised
            spelling = f"spelling FAILED ({e})"
        if spelling != "spelling ok":
            _report(f"self-test FAILED: {spelling}", report_file)
            return 1
        done = state["done"]
        text = "".join(p.text for p in state["pieces"]).replace("\n", " ")
        info = state["info"]
        _report(f"self-test OK: {Path(path).name} ({info.get('weight_type')}, {info.get('backend')}) "
                f"load {t_loaded - t_start:.1f}s, first token after {state['first'] - t_start:.1f}s, "
                f"{n} tokens at {done.gen_tokens_per_s:.1f} tok/s, "
                f"stop {done.stop_reason}, {spelling}: {text[:60]!r}", report_file)
        return 0
    finally:
        llm.shutdown()
        del app
