"""GenerationController and StoryDocument driven by a fake engine thread (no model, no window).

The fake worker has the signals of `app.chatllm.LLMWorker`; the test plays the engine's part by
emitting them, as the real worker does from its thread, and checks what the controller asks for
and what the document records.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Signal  # noqa: E402

from app.chatllm import TokenPiece, make_piece, normalise_newlines  # noqa: E402
from app.document import StoryDocument  # noqa: E402
from app.generation import GenerationController, Options  # noqa: E402
from engine.generator import DoneEvent, TokenEvent  # noqa: E402
from engine.sampling import SamplerSettings  # noqa: E402


class FakeWorker(QObject):
    """The engine thread's worker as the controller sees it: signals only."""

    tokensReady = Signal(int, list)
    generationFinished = Signal(int, object)
    generationFailed = Signal(int, str)
    generationWaiting = Signal(int, str)


class FakeLLM:
    """ChatLLM's GUI side: records what it is asked to do."""

    def __init__(self):
        self.worker = FakeWorker()
        self.requests, self.previews, self.stops = [], [], 0
        self.loading = self.generating = False

    def generate(self, request):
        self.requests.append(request)

    def preview(self, request):
        self.previews.append(request)

    def stop(self):
        self.stops += 1


class FakeWriter(QObject):
    """FileWriter's interface; keeps what would have been written."""

    failed = Signal(str, str)

    def __init__(self):
        super().__init__()
        self.written, self.removed = {}, []

    def write(self, path, data):
        self.written[str(path)] = data() if callable(data) else data   # bytes, or what makes them

    def remove(self, path):
        self.removed.append(str(path))


def piece(text, token=1, p=0.5):
    return TokenPiece(text, token, p, ((text, token, p), ("x", 2, 0.1)))


def done(text, seed=42, reason="length", n=2):
    return DoneEvent(stop_reason=reason, text=text, stop_sequence=None, prompt_tokens=5, prompt_tokens_reused=0,
                     prompt_tokens_dropped=0, gen_tokens=n, prompt_seconds=0.1, gen_seconds=0.1, seed=seed)


class Recorder:
    """Every signal of the controller, in order, with its arguments."""

    def __init__(self, controller):
        self.events = []
        for name in ("storyStarted", "piecesReady", "replyStarted", "replyChanged", "finished", "failed",
                     "busyChanged", "problem", "notice"):
            getattr(controller, name).connect(lambda *args, name=name: self.events.append((name, args)))

    def names(self):
        return [name for name, _ in self.events]

    def last(self, name):
        return next(args for n, args in reversed(self.events) if n == name)


@pytest.fixture
def rig(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    llm, writer, owner = FakeLLM(), FakeWriter(), QObject()
    document = StoryDocument(writer, parent=owner)     # owned here: a reader thread may drop the last reference
    options = {"value": Options(SamplerSettings(seed=42), 10, None, ("THE END",), {"top_k": 5})}

    def current_options():
        if isinstance(options["value"], Exception):
            raise options["value"]
        return options["value"]
    controller = GenerationController(llm, document, current_options)
    controller.finished.connect(document.record)      # as the window wires them
    controller.failed.connect(document.record)
    controller.on_model_changed({"n_ctx": 128, "path": "m.bin"})
    yield llm, document, controller, Recorder(controller), options
    del owner


def test_a_story_generation_streams_and_is_recorded_by_the_document(rig):
    llm, document, controller, rec, _ = rig
    document.edit_text("Once")
    controller.generate()
    request = llm.requests[-1]
    assert request.text == "Once" and request.stop == ["THE END"] and request.max_new_tokens == 10
    assert controller.busy() and document.locked and rec.names() == ["busyChanged", "storyStarted"]
    pieces = [piece(" upon"), piece(" a")]
    llm.worker.tokensReady.emit(request.request_id, pieces)
    assert rec.last("piecesReady") == (pieces,)
    llm.worker.generationFinished.emit(request.request_id, done(" upon a"))
    generated = rec.last("finished")[0]
    assert (generated.mode, generated.start, generated.text, generated.seed) == ("story", 4, " upon a", 42)
    assert generated.pieces == tuple(pieces) and generated.gen_tokens == 2
    assert not controller.busy() and not document.locked and rec.last("busyChanged") == (False,)
    # the story's text is built from what was generated; the passage keeps tokens, seed and sampler
    tree = document.story.tree
    node = tree[tree.current]
    assert document.story.text == "Once upon a" and node.generated and node.text == " upon a"
    assert [(t.text, t.token) for t in node.tokens] == [(" upon", 1), (" a", 1)]
    assert node.seed == 42 and node.sampler == {"top_k": 5} and document.dirty


def test_events_of_another_request_are_ignored(rig):
    llm, document, controller, rec, _ = rig
    controller.generate()
    rid = llm.requests[-1].request_id
    llm.worker.tokensReady.emit(rid + 1, [piece("stale")])
    llm.worker.generationFinished.emit(rid - 1, done("stale"))
    assert controller.busy() and "piecesReady" not in rec.names() and "finished" not in rec.names()


def test_no_model_and_a_bad_setting_are_problems_not_requests(rig):
    llm, document, controller, rec, options = rig
    options["value"] = ValueError("top_p: must be within 0..1")
    controller.generate()
    assert rec.last("problem") == ("Invalid sampler setting", "top_p: must be within 0..1")
    assert not llm.requests and not controller.busy() and not document.locked
    controller.on_model_changed(None)
    controller.generate()
    assert rec.last("problem")[0] == "No model" and not llm.requests


def test_retry_drops_the_last_generation_and_asks_again(rig):
    llm, document, controller, rec, _ = rig
    controller.retry()
    assert rec.last("notice")[0].startswith("Nothing to retry") and not llm.requests
    document.edit_text("Once")
    controller.generate()
    first = llm.requests[-1].request_id
    llm.worker.tokensReady.emit(first, [piece(" upon")])
    llm.worker.generationFinished.emit(first, done(" upon"))
    llm.worker.tokensReady.emit(first, [piece(" late")])   # after the end: ignored
    assert document.story.text == "Once upon"
    controller.retry()
    assert len(llm.requests) == 2 and llm.requests[-1].text == "Once" and document.story.text == "Once"
    llm.worker.tokensReady.emit(llm.requests[-1].request_id, [piece(" there")])
    llm.worker.generationFinished.emit(llm.requests[-1].request_id, done(" there"))
    tree = document.story.tree
    assert document.story.text == "Once there"
    assert [tree[i].text for i in tree.siblings(tree.current)] == [" upon", " there"]   # Retry adds a sibling
    document.undo()
    assert document.story.text == "Once upon"


def test_a_chosen_alternative_cuts_the_story_and_generates_on(rig):
    llm, document, controller, rec, _ = rig
    document.edit_text("Once")
    controller.generate()
    rid = llm.requests[-1].request_id
    llm.worker.tokensReady.emit(rid, [piece(" upon"), piece(" a")])
    llm.worker.generationFinished.emit(rid, done(" upon a"))
    replaced = []
    document.textReplaced.connect(lambda: replaced.append(document.story.text))
    controller.choose_alternative(len("Once upon"), " the", 7)
    assert replaced == ["Once upon the"] and llm.requests[-1].text == "Once upon the"
    tree = document.story.tree
    assert [(t.text, t.token) for t in tree[tree.current].tokens] == [(" the", 7)]
    assert " a" in [tree[i].text for i in tree.siblings(tree.current)]         # the old continuation stays


def test_a_failure_keeps_what_came_and_says_why(rig):
    llm, document, controller, rec, _ = rig
    document.edit_text("Once")
    controller.generate()
    rid = llm.requests[-1].request_id
    llm.worker.tokensReady.emit(rid, [piece(" up")])
    llm.worker.generationFailed.emit(rid, "connection reset")
    generated, message = rec.last("failed")
    assert generated.text == " up" and generated.done is None and message == "connection reset"
    assert rec.last("problem") == ("Generation failed", "connection reset")
    assert not controller.busy() and document.story.text == "Once up"


def test_stop_reaches_the_engine_only_while_busy(rig):
    llm, document, controller, rec, _ = rig
    controller.stop()
    assert llm.stops == 0
    controller.generate()
    controller.stop()
    assert llm.stops == 1


def test_chat_turns_flow_through_the_document(rig):
    llm, document, controller, rec, _ = rig
    document.story.mode = "chat"
    document.story.chat_template = "plain"
    controller.send("Hello")
    request = llm.requests[-1]
    assert [t.text for t in document.story.chat_turns] == ["Hello"]
    assert request.text.endswith("You: Hello\nBot:") and "THE END" in request.stop and "\nYou:" in request.stop
    llm.worker.tokensReady.emit(request.request_id, [piece(" Hi"), piece(" there"), piece("\nYou:")])
    assert rec.last("replyChanged") == ("Hi there",)
    llm.worker.generationFinished.emit(request.request_id, done(" Hi there\nYou:"))
    assert [(t.role, t.text) for t in document.story.chat_turns] == [("user", "Hello"), ("bot", "Hi there")]
    controller.generate()                        # the last turn is the bot's: a new answer replaces it
    assert [t.role for t in document.story.chat_turns] == ["user"]
    llm.worker.tokensReady.emit(llm.requests[-1].request_id, [piece("Hey")])
    llm.worker.generationFinished.emit(llm.requests[-1].request_id, done("Hey"))
    chat = document.story.chat
    assert [(t.role, t.text) for t in document.story.chat_turns] == [("user", "Hello"), ("bot", "Hey")]
    assert [chat[i].text for i in chat.siblings(chat.current)] == ["Hi there", "Hey"]   # a swipe away


def test_preview_asks_for_the_window_of_the_story_or_the_chat_prompt(rig):
    llm, document, controller, rec, _ = rig
    document.edit_text("A tale")
    controller.preview()
    assert llm.previews[-1].text == "A tale" and not llm.requests
    document.story.mode = "chat"
    document.add_user_turn("Hi")
    controller.preview()
    assert llm.previews[-1].text.endswith("Hi\nBot:")


def test_the_worker_normalises_line_breaks_before_a_piece_is_made():
    assert normalise_newlines("a\r\nb\rc\u2029d\u2028e\n") == "a\nb\nc\nd\ne\n"
    event = TokenEvent("x\r\n", 7, 0.25, [(7, 0.25), (9, 0.5)])
    made = make_piece(event, (("x\r\n", 7, 0.25), ("y\r", 9, 0.5)))
    assert made == TokenPiece("x\n", 7, 0.25, (("x\n", 7, 0.25), ("y\n", 9, 0.5)))


def test_an_open_that_fails_leaves_the_story_unsaved(rig, tmp_path, qtbot):
    llm, document, controller, rec, _ = rig
    document.edit_text("my draft")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"format": "neox-writer-story", "vers')
    with qtbot.waitSignal(document.problem, timeout=10_000) as problem:
        document.open(bad)
    assert "not valid JSON" in problem.args[1]
    assert document.dirty and document.story.text == "my draft" and document.title().startswith("*")
