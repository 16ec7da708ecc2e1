"""The marks on the model's text in the story view (app/widgets/storyview.py): a stream of many
batches is one mark, not one per batch. Each extra selection costs every repaint of its paragraph
(QPlainTextEdit draws it over each line), and a stream repaints its paragraph every batch: with a
mark per batch a 1,800-character paragraph took 7.9 ms a repaint after 50 batches instead of 3.2
(tests/test_gui_latency.py's worst gaps came from there)."""
from __future__ import annotations

import os
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.widgets.storyview import StoryView, probability_colour  # noqa: E402


def piece(text: str, p: float = float("nan")):
    return SimpleNamespace(text=text, probability=p, alternatives=[])


def marks(view) -> list[tuple[int, int]]:
    return [(s.cursor.selectionStart(), s.cursor.selectionEnd()) for s in view.extraSelections()]


def stream(view, batches) -> None:
    view.begin_generation()
    for batch in batches:
        view.append_pieces(batch)


def test_a_stream_of_fifty_batches_is_one_mark(qtbot):
    view = StoryView()
    qtbot.addWidget(view)
    view.setPlainText("Once upon a time")
    start = len(view.toPlainText())
    stream(view, [[piece(" and"), piece(" then")] for _ in range(50)])
    end = len(view.toPlainText())
    assert end == start + 50 * len(" and then")
    assert marks(view) == [(start, end)]           # the writer's text unmarked, the model's one mark
    view.end_generation()
    assert marks(view) == [(start, end)]


def test_probability_colours_come_in_steps_and_neighbours_of_one_step_share_a_mark(qtbot):
    assert probability_colour(0.96) == probability_colour(0.97) != probability_colour(0.5)
    assert probability_colour(0.0) != probability_colour(0.05)
    view = StoryView()
    qtbot.addWidget(view)
    view.probabilities = True
    view.setPlainText("A")
    stream(view, [[piece(" b", 0.96), piece(" c", 0.97)], [piece(" d", 0.971), piece(" e", 0.5)],
                  [piece(" f", 0.5), piece(" g", float("nan"))]])
    assert view.toPlainText() == "A b c d e f g"
    assert marks(view) == [(1, 7), (7, 11), (11, 13)]    # " b c d" across two batches, " e f", " g"
    colours = [s.format.background().color() for s in view.extraSelections()]
    assert colours == [probability_colour(0.96), probability_colour(0.5), probability_colour(float("nan"))]
