"""Writing through a remote server from the desktop window (pytest-qt, offscreen).

The remote server is our own `app.server`, started in-process on a free loopback port with
its own copy of the fixture model; the window has no local model at all. The dialog detects
the server off the GUI thread, the story view streams its tokens, Stop aborts on the server,
alternatives come as text, and network failures are reported without losing story text.
"""
from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QLabel, QPushButton, QSpinBox, QWidget  # noqa: E402

from app.server import ApiServer, EngineWorker, ServerConfig  # noqa: E402
from app.settings import settings_path  # noqa: E402
from engine.sampling import SamplerSettings  # noqa: E402
from test_app_window import PROMPT, WAIT, find, generate, home, make_window, model_path  # noqa: E402,F401
from test_server_support import SlowWorker  # noqa: E402

KEY = "remote-k3y"


@pytest.fixture(autouse=True)
def no_system_keyring(monkeypatch):
    monkeypatch.setattr("app.keystore._system_keyring", lambda: None)


@pytest.fixture(scope="module")
def engine(model_path):   # noqa: F811
    return EngineWorker.load(model_path, backend="reference")


@pytest.fixture
def remote(engine):
    """Our own server with a key; its worker slowed a little so that Stop has time to act."""
    slow = SlowWorker(engine, delay=0.01)
    server = ApiServer(slow, ServerConfig(port=0, api_key=KEY))
    server.start()
    server.slow = slow
    yield server
    server.stop()


@pytest.fixture
def window(qtbot, home):   # noqa: F811
    w = make_window(qtbot, check_recovery=False)
    yield w
    w.close()


def connect(qtbot, window, url: str, key: str = KEY, kind: str = "Detect"):
    """Open the dialog from the model picker, connect, and use the server."""
    find(window, QPushButton, "remoteServerButton").click()
    dialog = window.dialogs.remote_dialog
    dialog.url_edit.setText(url)
    dialog.key_edit.setText(key)
    dialog.kind_picker.setCurrentText(kind)
    dialog.connect_button.click()
    qtbot.waitUntil(lambda: dialog.use_button.isEnabled(), timeout=WAIT)
    with qtbot.waitSignal(window.modelLoaded, timeout=WAIT) as loaded:
        dialog.use_button.click()
    return loaded.args[0]


def local_greedy(engine, prompt: str, max_tokens: int):
    engine.generator.reset()
    events = list(engine.generator.generate(prompt, SamplerSettings.from_preset("Deterministic"),
                                            max_tokens=max_tokens))
    return events[-1]


def test_the_story_streams_from_a_remote_server(qtbot, window, remote, engine):
    info = connect(qtbot, window, remote.url + "/api")
    assert info["remote"] and info["kind"] == "KoboldCpp" and info["model"] == "tiny"
    assert info["n_ctx"] == engine.n_ctx
    assert "KoboldCpp" in find(window, QLabel, "modelLabel").text()
    assert window.sampling.unsupported() == []              # KoboldCpp takes every sampler of the panel
    assert window.settings.get("remote_url") == remote.url
    assert window.keystore.get(remote.url) == KEY and KEY.encode() not in window.settings.to_bytes()

    find(window, QWidget, "presetPicker").setCurrentText("Deterministic")
    changes = []
    window.story_view.document().contentsChange.connect(lambda pos, rem, add: changes.append(add))
    summary = generate(qtbot, window, PROMPT, max_tokens=40)
    streamed = [c for c in changes[1:] if c]
    assert len(streamed) >= 2                                # arrived in several batches
    expected = local_greedy(engine, PROMPT, 40)
    assert window.story_view.toPlainText() == PROMPT + expected.text
    assert window.document.story.generations[-1].text == expected.text
    # KoboldCpp streams text pieces, not tokens: a token that completes no character sends none
    assert 1 <= summary.gen_tokens <= expected.gen_tokens and summary.stop_reason == expected.stop_reason
    # token counts through the server's tokenizer (KoboldCpp streams no usage)
    assert summary.done.prompt_tokens == len(engine.tokenizer.encode(PROMPT))
    assert f"context {summary.done.prompt_tokens + summary.gen_tokens}" in find(window, QLabel, "contextLabel").text()


def test_remote_alternatives_are_text_and_choosing_one_regenerates(qtbot, window, remote):
    info = connect(qtbot, window, remote.url, kind="OpenAI-compatible")
    assert info["kind"] == "OpenAI-compatible"
    assert {"typical", "tfs", "top_a", "mirostat", "dry_multiplier", "banned_phrases"} <= set(window.sampling.unsupported())
    assert not find(window, QWidget, "typicalSpin").isEnabled() and not find(window, QWidget, "typicalSlider").isEnabled()
    assert not find(window, QWidget, "bannedPhrasesEdit").isEnabled()
    assert find(window, QSpinBox, "seedSpin").isEnabled()

    find(window, QWidget, "presetPicker").setCurrentText("Deterministic")
    generate(qtbot, window, PROMPT, max_tokens=12)
    tokens = window.story_view.tokens
    assert tokens and all(span.piece.token == -1 and span.piece.alternatives for span in tokens)
    piece = tokens[2].piece
    assert all(token == -1 and isinstance(text, str) for text, token, _ in piece.alternatives)
    assert piece.probability == pytest.approx(piece.alternatives[0][2])   # greedy took the likeliest

    window.on_story_view_token_clicked(2, window.story_view.mapToGlobal(window.story_view.rect().center()))
    popup = window.token_popup
    assert popup.isVisible() and popup.list.count() == len(piece.alternatives)
    assert popup.list.item(0).font().bold()                  # the chosen one, recognised by its text
    row = next(i for i, (text, _, _) in enumerate(piece.alternatives) if text != piece.text)
    chosen = piece.alternatives[row][0]
    cut = window.story_view.token_start_offset(2)
    before = window.story_view.toPlainText()[:cut]
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        popup.choose(row)
    assert window.story_view.toPlainText().startswith(before + chosen)


def test_stop_aborts_the_remote_generation(qtbot, window, remote):
    connect(qtbot, window, remote.url)
    find(window, QSpinBox, "maxTokensSpin").setValue(100)
    find(window, QSpinBox, "seedSpin").setValue(7)          # a seed that does not meet end-of-text early
    window.story_view.setPlainText(PROMPT)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as done:
        find(window, QWidget, "generateButton").click()
        qtbot.waitUntil(lambda: len(window.story_view.tokens) >= 1, timeout=WAIT)
        find(window, QWidget, "stopButton").click()
    summary = done.args[0]
    assert summary.stop_reason == "cancelled" and 1 <= summary.gen_tokens < 100
    qtbot.waitUntil(lambda: bool(remote.slow.finished), timeout=WAIT)
    assert remote.slow.finished[-1].stop_reason == "cancelled"          # the server stopped too
    text = window.story_view.toPlainText()
    assert text.startswith(PROMPT) and window.document.story.text == text and not window.story_view.isReadOnly()


def test_an_unreachable_server_is_reported_and_the_story_kept(qtbot, window, remote):
    window.story_view.setPlainText("A story that must survive.")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    find(window, QPushButton, "remoteServerButton").click()
    dialog = window.dialogs.remote_dialog
    dialog.url_edit.setText(f"127.0.0.1:{closed}")
    dialog.connect_button.click()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Could not connect"), timeout=WAIT)
    assert "127.0.0.1" in dialog.status.text() and not dialog.use_button.isEnabled()
    dialog.reject()

    assert window.models.info is None and window.story_view.toPlainText() == "A story that must survive."

    # a wrong key: the server lets clients detect it, then refuses to generate, saying why
    connect(qtbot, window, remote.url, key="wrong")
    with qtbot.waitSignal(window.errorShown, timeout=WAIT) as error:
        find(window, QWidget, "generateButton").click()
    assert "key" in error.args[0].lower()
    assert window.story_view.toPlainText() == "A story that must survive." and not window.generation.busy()

    # the server goes away after connecting: the generation fails with a message, the text stays
    connect(qtbot, window, remote.url)
    remote.stop()
    story = "A story that must survive. And then"
    with qtbot.waitSignal(window.errorShown, timeout=WAIT) as error:
        window.story_view.setPlainText(story)
        find(window, QWidget, "generateButton").click()
    assert "could not" in error.args[0].lower() or "refused" in error.args[0].lower()
    assert window.story_view.toPlainText() == story and window.document.story.text == story
    assert not window.story_view.isReadOnly() and not window.generation.busy()


def test_loading_a_local_model_after_a_remote_one(qtbot, window, remote, model_path):   # noqa: F811
    connect(qtbot, window, remote.url, kind="OpenAI-compatible")
    assert window.sampling.unsupported()
    with qtbot.waitSignal(window.modelLoaded, timeout=WAIT) as loaded:
        window.open_model(model_path)
    assert not loaded.args[0]["remote"] and window.sampling.unsupported() == []
    generate(qtbot, window, PROMPT, max_tokens=5)
    assert window.story_view.tokens[0].piece.token >= 0       # local tokens carry ids again
    with qtbot.waitSignal(window.writer.written, timeout=WAIT, check_params_cb=lambda p: p == str(settings_path())):
        window.save_settings()
    assert window.settings.get("last_model") == str(model_path)


def test_the_context_view_counts_with_the_server_tokenizer(qtbot, window, remote, engine):
    connect(qtbot, window, remote.url)
    story = "The lighthouse keeper counted the ships that passed in the night, one by one, " * 3
    window.story_view.setPlainText(story)
    window.memory.memory_edit.setPlainText("[A sea story]")
    window.memory.note_edit.setPlainText("Storm coming.")
    window.memory.depth_spin.setValue(10)
    with qtbot.waitSignal(window.contextShown, timeout=WAIT,     # (not an earlier preview of the empty story)
                          check_params_cb=lambda c: any(p.kind == "author's note" for p in c.parts)) as shown:
        window.refresh_context()
    context = shown.args[0]
    parts = {p.kind: p for p in context.parts}
    assert parts["memory"].n_tokens == len(engine.tokenizer.encode(parts["memory"].text))
    note = parts["author's note"]
    assert "Storm coming." in note.text and note.n_tokens == len(engine.tokenizer.encode(note.text))
    after = context.parts[-1]
    assert after.kind == "story" and 5 <= len(engine.tokenizer.encode(after.text)) <= 15   # about 10 tokens deep
    assert context.n_tokens == sum(p.n_tokens for p in context.parts)
