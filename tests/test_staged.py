"""The staged backend of a first start: the starter writes at once, the session moves to the fast kernels.

The child that compiles the kernels is replaced by one that waits for a file the test creates,
so the move happens at a token the test chooses; the fast model itself is the real one (its
kernels come from numba's cache, which the rest of the suite fills). What is tested: a greedy
generation that spans the move gives the tokens of a generation on the fast backend alone; the
starter's logits match the reference's; the session's cache moves without re-evaluation; branches
work before and after; a failing child leaves the in-process compile; closing the model stops the
child; the kernel-preparing child writes its ready mark; the window's status bar says it is warming up.
"""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from app.bundled import demo_dir
from engine import load_model
from engine.loaded import open_model
from engine.sampling import SamplerSettings


@pytest.fixture(autouse=True)
def float32_caches(monkeypatch):
    """float32 key and value caches, not the default fp16: these compare caches and logits with the
    reference's (or with each other's float32 copies) at float32 tolerance; tests/test_kv_cache.py
    covers the fp16 caches on every path."""
    monkeypatch.setenv("NEOX_WRITER_KV", "f32")

DEMO = sorted(demo_dir().glob("demo-*.bin"))[0]
PROMPT = "It was a truth universally acknowledged"
WAIT_FOR_FILE = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)"


@pytest.fixture
def gated(monkeypatch, tmp_path):
    """Staged models whose kernel child finishes when the returned release() is called."""
    import engine.fast.prepare
    import engine.staged
    flag = tmp_path / "release"
    monkeypatch.setattr(engine.fast.prepare, "is_ready", lambda file: False)
    monkeypatch.setattr(engine.staged, "child_command", lambda path: [sys.executable, "-c", WAIT_FOR_FILE, str(flag)])

    def release():
        flag.write_text("go")
    return release


def greedy_tokens(loaded, n: int, switch_after: int | None = None, release=None) -> list[int]:
    tokens = []
    for event in loaded.generator.generate(PROMPT, SamplerSettings.from_preset("Deterministic"), max_tokens=n):
        if hasattr(event, "token"):
            tokens.append(event.token)
            if switch_after is not None and len(tokens) == switch_after:
                release()
                assert loaded.model.staged.wait_ready(600), "the fast model never became ready"
    return tokens


def test_a_generation_spanning_the_move_equals_the_fast_one(gated):
    fast = greedy_tokens(open_model(DEMO, backend="fast"), 40)
    loaded = open_model(DEMO, backend="staged")
    staged = loaded.model.staged
    assert staged is not None and loaded.model.backend_name == "starter"
    tokens = greedy_tokens(loaded, 40, switch_after=15, release=gated)
    session = loaded.generator.session
    assert tokens == fast
    assert session.moves == 1 and session.backend_name == "fast" and loaded.model.backend_name == "fast"
    assert loaded.model.info()["backend"] == "fast" and staged.failure is None
    # the moved session continues: its cache holds the whole story, not just what followed the move
    assert session.tokens == session.inner.tokens and len(session.tokens) > 40
    loaded.close()


def test_the_moved_cache_gives_the_fast_sessions_logits(gated):
    model = load_model(DEMO, backend="staged")
    fast = load_model(DEMO, backend="fast")
    ids = list(range(200, 230))
    session = model.new_session(64)
    session.eval(ids[:20])                  # on the starter
    gated()
    assert model.staged.wait_ready(600)
    moved = session.eval(ids[20:], all_logits=True)
    reference = fast.new_session(64)
    expected = reference.eval(ids, all_logits=True)[20:]
    without_prefix = fast.new_session(64).eval(ids[20:], all_logits=True)
    assert session.backend_name == "fast" and session.moves == 1
    # the starter's cache is float32-exact where the fast path rounds activations to 8 bits: close,
    # not equal; without the moved cache (no prefix) the logits are another story altogether
    assert (moved.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(moved - expected).max() * 10 < np.abs(without_prefix - expected).max()
    model.close()


def test_the_starter_computes_the_reference_logits(gated):
    starter = load_model(DEMO, backend="staged")
    reference = load_model(DEMO, backend="reference")
    ids = list(range(300, 340))
    got = starter.new_session(64).eval(ids, all_logits=True)
    want = reference.new_session(64).eval(ids, all_logits=True)
    assert starter.backend_name == "starter"
    assert np.abs(got - want).max() < 1e-3
    starter.close()


@pytest.mark.parametrize("released", [False, True])
def test_many_continuations_on_a_staged_model(gated, released):
    loaded = open_model(DEMO, backend="staged")
    if released:
        gated()
        assert loaded.model.staged.wait_ready(600)
    settings = SamplerSettings.from_preset("Deterministic")
    events = list(loaded.generator.generate_many(PROMPT, 3, settings, max_tokens=8))
    texts = ["".join(e.text for e in events if hasattr(e, "token") and e.index == i) for i in range(3)]
    assert texts[0] == texts[1] == texts[2] and texts[0]       # greedy: three equal continuations
    assert loaded.generator.session.backend_name == ("fast" if released else "starter")
    loaded.close()


def test_a_failing_child_leaves_the_compile_in_process(monkeypatch):
    import engine.fast.prepare
    import engine.staged
    monkeypatch.setattr(engine.fast.prepare, "is_ready", lambda file: False)
    monkeypatch.setattr(engine.staged, "child_command",
                        lambda path: [sys.executable, "-c", "print('no compiler here'); raise SystemExit(3)"])
    model = load_model(DEMO, backend="staged")
    assert model.staged.wait_ready(600)
    assert "exited with 3" in model.staged.failure and "no compiler here" in model.staged.failure
    assert model.backend_name == "fast"
    model.close()


def test_closing_the_model_stops_the_child(gated):
    model = load_model(DEMO, backend="staged")
    child = None
    for _ in range(500):
        child = model.staged._child
        if child is not None:
            break
        time.sleep(0.01)
    assert child is not None and child.poll() is None
    model.close()
    assert child.poll() is not None and not model.staged.ready


def test_the_prepare_child_writes_its_ready_mark(tmp_path):
    from engine.fast.prepare import child_command, is_ready, ready_mark
    from engine.ggml_file import GGMLFile
    file = GGMLFile(DEMO)
    done = subprocess.run(child_command(DEMO), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ready_mark(file) and is_ready(file)
    # with the mark, a staged model starts on the fast backend at once
    model = load_model(DEMO, backend="staged")
    assert model.staged is None and model.backend_name == "fast"
    model.close()
    file.close()


def test_the_status_bar_says_the_engine_is_warming_up(qtbot):
    from app.window.statusbar import StatusBar
    bar = StatusBar()
    qtbot.addWidget(bar)
    bar.show_model({"path": str(DEMO), "backend": "starter", "weight_type": "q5_1", "n_ctx": 512})
    bar.show_speed(3.25)
    assert bar.tokens_per_second_label.text() == "warming up: 3.2 tok/s, full speed soon"
    bar.show_backend("fast")
    assert bar.tokens_per_second_label.text() == "3.2 tok/s"
    assert "full speed" in bar.currentMessage()
    bar.show_speed(120.0)
    assert bar.tokens_per_second_label.text() == "120.0 tok/s"


def test_the_worker_reports_the_move(qtbot, gated):
    from app.chatllm import ChatLLM
    llm = ChatLLM(backend="staged")
    try:
        with qtbot.waitSignal(llm.worker.modelLoaded, timeout=120_000) as loaded:
            llm.load(str(DEMO))
        assert loaded.args[0]["backend"] == "starter"
        with qtbot.waitSignal(llm.worker.backendChanged, timeout=600_000) as changed:
            gated()
        assert changed.args == ["fast"]
    finally:
        llm.shutdown()
        if llm.worker.local is not None:
            llm.worker.local.close()


def test_shutting_down_while_warming_leaves_no_timer_on_a_finished_thread(qtbot, gated):
    # the self-test (wheel and bundle) printed "QObject::killTimer: Timers cannot be stopped from
    # another thread" at exit: the worker's warm-up timer was still running when its thread ended
    import gc

    from PySide6.QtCore import qInstallMessageHandler

    from app.chatllm import ChatLLM
    messages = []
    previous = qInstallMessageHandler(lambda _kind, _context, text: messages.append(text))
    try:
        llm = ChatLLM(backend="staged")
        llm.load(str(DEMO))       # (not qtbot.waitSignal: its timer would be stopped from the engine thread)
        qtbot.waitUntil(lambda: llm.worker._warm_timer.isActive(), timeout=120_000)
        llm.shutdown()
        assert not llm.worker._warm_timer.isActive()
        llm.worker.local.close()
        del llm
        gc.collect()
    finally:
        qInstallMessageHandler(previous)
    assert not [m for m in messages if "Timers cannot be stopped" in m], messages


def test_time_first_token_generates_on_the_starter_and_reports_full_speed(qtbot, gated, tmp_path, monkeypatch):
    # `neox-writer --time-first-token` (issue 19's first-launch figure, also from a bundle): the
    # window starts as usual, Generate is pressed once the model is loaded, the first token comes
    # from the starter, the report says when, then when the fast kernels took over, and it quits.
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.__main__ import build_parser
    from app.window.application import run_window
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    report = tmp_path / "timing.txt"

    def release_after_the_first_token():
        if "first " in (report.read_text() if report.exists() else ""):
            gated()                            # only now may the fast kernels arrive
        else:
            poll.start()
    poll = QTimer(singleShot=True, interval=20)
    poll.timeout.connect(release_after_the_first_token)
    give_up = QTimer(singleShot=True, interval=300_000)      # a failure ends the test, not the suite
    give_up.timeout.connect(lambda: QApplication.instance().exit(2))
    poll.start()
    give_up.start()
    try:
        code = run_window(build_parser().parse_args(["--time-first-token", "--model", str(DEMO),
                                                     "--report", str(report)]))
    finally:
        poll.stop()
        give_up.stop()
    lines = report.read_text().splitlines()
    assert code == 0, lines
    assert [line.split()[0] for line in lines] == ["shown_at", "loaded", "first", "fast"]
    shown_at, loaded, first, fast = (float(line.split()[1]) for line in lines)
    assert abs(shown_at - time.time()) < 600 and 0 <= loaded <= first <= fast
