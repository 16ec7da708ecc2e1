"""The API server toggle in the desktop window (pytest-qt, offscreen).

The server serves the window's own model through the engine thread's worker: the tests talk
to it over real HTTP from other threads while the GUI runs, generate in the GUI and on the
server at the same time, and check that switching it off closes the port. Every test has its
own NEOX_WRITER_HOME; keys go to an in-memory KeyStore (never the user's keyring).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QCheckBox, QLabel, QWidget  # noqa: E402

from app.widgets.serverpanel import KEY_NAME  # noqa: E402
from app.settings import Settings, settings_path  # noqa: E402
from test_app_window import PROMPT, WAIT, find, generate, home, make_window, model_path, window  # noqa: E402,F401


@pytest.fixture(autouse=True)
def no_system_keyring(monkeypatch):
    monkeypatch.setattr("app.keystore._system_keyring", lambda: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, method: str = "GET", path: str = "/", body=None, headers=None, timeout=60):
    """(status, parsed JSON body) of one HTTP request."""
    host, port = url.split("://")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def serve(qtbot, window, port: int, key: str = "") -> str:
    window.server_panel.port_spin.setValue(port)
    window.server_panel.key_edit.setText(key)
    with qtbot.waitSignal(window.local_server.started, timeout=WAIT) as started:
        find(window, QCheckBox, "serverToggle").click()
    return started.args[0]


def unserve(qtbot, window) -> None:
    with qtbot.waitSignal(window.local_server.stopped, timeout=WAIT):
        find(window, QCheckBox, "serverToggle").click()


def in_thread(func):
    """Run `func` on a thread; the returned dict gets its "result" or "error"."""
    out: dict = {}

    def run():
        try:
            out["result"] = func()
        except Exception as e:   # noqa: BLE001 - the test asserts on it
            out["error"] = e
    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def slow_down(engine, delay: float):
    """Make the served EngineWorker yield its events `delay` seconds apart (holding the engine
    lock all the while, as a big model would), so that overlaps are certain."""
    run = engine.run

    def slow_run(request, cancel):
        for event in run(request, cancel):
            time.sleep(delay)
            yield event
    engine.run = slow_run


def test_toggle_serves_the_loaded_model_and_off_closes_the_port(qtbot, window):
    port = free_port()
    url = serve(qtbot, window, port)
    assert url == f"http://127.0.0.1:{port}"
    assert url in find(window, QLabel, "serverAddressLabel").text()
    assert url in find(window, QLabel, "serverLabel").text()
    assert window.server_panel.action.isChecked()
    assert not window.server_panel.port_spin.isEnabled()      # settings are fixed while serving

    ticks = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    answer = in_thread(lambda: (call(url, path="/api/v1/model"),
                                call(url, "POST", "/v1/completions",
                                     {"prompt": PROMPT, "max_tokens": 40, "temperature": 0})))
    qtbot.waitUntil(lambda: not answer["thread"].is_alive(), timeout=WAIT)
    timer.stop()
    assert "error" not in answer, answer.get("error")
    (status, model), (status2, completion) = answer["result"]
    assert status == 200 and model == {"result": "koboldcpp/tiny"}
    assert status2 == 200 and completion["model"] == "tiny"
    text = completion["choices"][0]["text"]
    assert text and completion["usage"]["completion_tokens"] >= 1
    assert len(ticks) >= 2           # the GUI's event loop kept running while the server generated

    # the same greedy continuation as the window's own generation of the same prompt
    find(window, QWidget, "presetPicker").setCurrentText("Deterministic")
    summary = generate(qtbot, window, PROMPT, max_tokens=40)
    assert summary.text == text

    assert window.settings.get("server_enabled") and window.settings.get("server_port") == port
    unserve(qtbot, window)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert find(window, QLabel, "serverAddressLabel").text() == "Off"
    assert not window.settings.get("server_enabled") and window.llm.worker.served is None


def test_gui_and_server_generations_at_once(qtbot, window):
    url = serve(qtbot, window, free_port())
    engine = window.local_server.server.worker
    slow_down(engine, 0.02)
    waiting = []
    window.llm.worker.generationWaiting.connect(lambda rid, msg: waiting.append(msg))

    # 1. the server is generating; the GUI's generation waits for it, then runs
    server_job = in_thread(lambda: call(url, "POST", "/api/v1/generate",
                                        {"prompt": PROMPT, "max_length": 60, "temperature": 0}))
    qtbot.waitUntil(lambda: window.local_server.server.queue.busy, timeout=WAIT)
    summary = generate(qtbot, window, PROMPT, max_tokens=20)
    assert waiting and "API server" in waiting[0]
    assert summary.gen_tokens >= 1 and window.story_view.toPlainText().startswith(PROMPT)
    qtbot.waitUntil(lambda: not server_job["thread"].is_alive(), timeout=WAIT)
    status, body = server_job["result"]
    assert status == 200 and body["results"][0]["text"]

    # 2. the GUI is generating (slowed in the engine thread); a server request waits, then runs
    worker = window.llm.worker
    worker.tokensReady.connect(lambda rid, pieces: time.sleep(0.02), Qt.DirectConnection)
    window.story_view.setPlainText(PROMPT)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as gui_done:
        find(window, QWidget, "generateButton").click()
        server_job = in_thread(lambda: call(url, "POST", "/v1/completions",
                                            {"prompt": PROMPT, "max_tokens": 10, "temperature": 0}))
    qtbot.waitUntil(lambda: not server_job["thread"].is_alive(), timeout=WAIT)
    status, body = server_job["result"]
    assert status == 200 and body["choices"][0]["text"]
    assert gui_done.args[0].stop_reason in ("length", "eos")

    # 3. Stop while the GUI waits for the server: nothing generated, the story untouched
    server_job = in_thread(lambda: call(url, "POST", "/api/v1/generate",
                                        {"prompt": PROMPT, "max_length": 60, "temperature": 0}))
    qtbot.waitUntil(lambda: window.local_server.server.queue.busy, timeout=WAIT)
    before = window.story_view.toPlainText()
    waiting.clear()
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as stopped:
        find(window, QWidget, "generateButton").click()
        qtbot.waitUntil(lambda: "API server" in window.statusBar().currentMessage(), timeout=WAIT)
        assert waiting
        find(window, QWidget, "stopButton").click()
    assert stopped.args[0].stop_reason == "cancelled" and stopped.args[0].gen_tokens == 0
    assert window.story_view.toPlainText() == before and not window.story_view.isReadOnly()
    qtbot.waitUntil(lambda: not server_job["thread"].is_alive(), timeout=WAIT)
    assert server_job["result"][0] == 200
    unserve(qtbot, window)


def test_a_newly_loaded_model_is_served(qtbot, window, model_path):   # noqa: F811
    url = serve(qtbot, window, free_port())
    engine = window.local_server.server.worker
    old_generator = engine.generator
    with qtbot.waitSignal(window.modelLoaded, timeout=WAIT):
        window.open_model(model_path)
    assert engine.generator is window.llm.worker.generator is not old_generator
    status, body = call(url, "POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 5})
    assert status == 200 and body["choices"][0]["text"] is not None
    unserve(qtbot, window)


def test_beyond_loopback_needs_a_key_and_keys_stay_out_of_settings(qtbot, window):
    panel = window.server_panel
    panel.host_edit.setCurrentText("0.0.0.0")
    assert "other machines" in find(window, QLabel, "serverWarningLabel").text()
    with qtbot.waitSignal(window.local_server.failed, timeout=WAIT) as failed:
        find(window, QCheckBox, "serverToggle").click()
    assert "API key is required" in failed.args[0]
    assert not find(window, QCheckBox, "serverToggle").isChecked() and not window.local_server.running
    assert "API key is required" in find(window, QLabel, "serverAddressLabel").text()

    panel.host_edit.setCurrentText("127.0.0.1")
    assert find(window, QLabel, "serverWarningLabel").text() == ""
    url = serve(qtbot, window, free_port(), key="s3cret-key")
    assert window.keystore.get(KEY_NAME) == "s3cret-key"
    assert "memory only" in find(window, QLabel, "serverKeyNote").text()
    assert b"s3cret-key" not in window.settings.to_bytes()
    body = {"prompt": PROMPT, "max_tokens": 3}
    assert call(url, "POST", "/v1/completions", body)[0] == 401
    assert call(url, "POST", "/v1/completions", body, {"Authorization": "Bearer s3cret-key"})[0] == 200
    unserve(qtbot, window)


def test_the_server_comes_back_on_with_the_next_start(qtbot, home, model_path):   # noqa: F811
    port = free_port()
    first = make_window(qtbot, check_recovery=False)
    with qtbot.waitSignal(first.modelLoaded, timeout=WAIT):
        first.open_model(model_path)
    serve(qtbot, first, port)
    with qtbot.waitSignal(first.writer.written, timeout=WAIT,
                          check_params_cb=lambda p: p == str(settings_path())):
        first.close()
    saved = Settings.load()
    assert saved.get("server_enabled") and saved.get("server_port") == port
    with pytest.raises(OSError):          # closing the window stopped it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    second = make_window(qtbot, check_recovery=False)
    with qtbot.waitSignal(second.local_server.started, timeout=WAIT) as started:
        second.open_model(model_path)
    assert started.args[0] == f"http://127.0.0.1:{port}"
    assert find(second, QCheckBox, "serverToggle").isChecked()
    assert call(started.args[0], path="/api/extra/version")[1]["result"] == "KoboldCpp"
    second.close()
