"""N alternatives through the GenerationController with a fake engine thread: one batched request
(generate_many) on the local engine, one request after another on a server, Stop in between."""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.sampling import SamplerSettings  # noqa: E402
from test_generation import done, piece, rig  # noqa: E402,F401

from app.generation import Options  # noqa: E402


def ask_for(options, n: int, seed: int = 40) -> None:
    options["value"] = Options(SamplerSettings(seed=seed), 10, None, (), {"alternatives": n, "seed": seed})


def tagged(text: str, index: int):
    return dataclasses.replace(piece(text), index=index)


def test_the_local_engine_writes_the_alternatives_in_one_batch(rig):
    llm, document, controller, rec, options = rig
    ask_for(options, 3)
    document.edit_text("Once")
    controller.generate()
    request = llm.requests[-1]
    assert len(llm.requests) == 1 and request.n == 3 and request.settings.seed == 40
    tree = document.story.tree
    assert len(tree.root.children) == 3                       # all three appear at once
    rid = request.request_id
    llm.worker.tokensReady.emit(rid, [tagged(" upon", 0), tagged(" there", 1), tagged(" more", 2)])
    llm.worker.tokensReady.emit(rid, [tagged(" a", 0), tagged(" was", 1)])
    assert [[p.text for p in args[0]] for name, args in rec.events if name == "piecesReady"] == [[" upon"], [" a"]]
    for index, text in ((1, " there was"), (0, " upon a"), (2, " more")):
        llm.worker.generationFinished.emit(rid, dataclasses.replace(done(text, seed=40 + index), index=index))
        assert controller.busy() == (index != 2)
    assert rec.names().count("finished") == 1 and not document.locked
    assert [(tree[p].text, tree[p].seed) for p in tree.root.children] == [(" upon a", 40), (" there was", 41),
                                                                         (" more", 42)]
    assert document.story.text == "Once upon a"
    document.undo()
    assert document.story.text == "Once" and tree.root.children == ()


def test_a_server_writes_them_one_request_after_another(rig):
    llm, document, controller, rec, options = rig
    controller.on_model_changed({"n_ctx": 128, "path": "http://host", "remote": True})
    ask_for(options, 2, seed=7)
    document.edit_text("Once")
    controller.generate()
    first = llm.requests[-1]
    assert first.n == 1 and first.settings.seed == 7
    llm.worker.tokensReady.emit(first.request_id, [piece(" upon")])
    llm.worker.generationFinished.emit(first.request_id, done(" upon", seed=7))
    second = llm.requests[-1]
    assert second is not first and second.text == "Once" and second.settings.seed == 8
    llm.worker.tokensReady.emit(second.request_id, [piece(" again")])      # not shown: only the first streams
    llm.worker.generationFinished.emit(second.request_id, done(" again", seed=8))
    assert rec.names().count("storyStarted") == 1 and rec.names().count("finished") == 1
    assert [p.text for name, args in rec.events if name == "piecesReady" for p in args[0]] == [" upon"]
    tree = document.story.tree
    assert [tree[p].text for p in tree.root.children] == [" upon", " again"]


def test_stop_keeps_what_was_written_and_drops_the_empty_ones(rig):
    llm, document, controller, rec, options = rig
    ask_for(options, 3)
    document.edit_text("Once")
    controller.generate()
    rid = llm.requests[-1].request_id
    llm.worker.tokensReady.emit(rid, [tagged(" upon", 0)])
    controller.stop()
    for index in range(3):
        llm.worker.generationFinished.emit(rid, dataclasses.replace(done("", seed=40 + index, reason="cancelled"),
                                                                    index=index))
    tree = document.story.tree
    assert llm.stops == 1 and [tree[p].text for p in tree.root.children] == [" upon"]
    assert document.story.text == "Once upon" and not controller.busy()
