"""The demo model's build tools (tools/train_demo) that run without torch: the held-out split of
corpus.py and the learning-rate schedules of train.py (schedule.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "train_demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "demo"
sys.path.insert(0, str(TOOLS))

from corpus import HELD_OUT_MOBY_CHAPTERS, is_chapter_heading, split_held_out  # noqa: E402
from schedule import learning_rate  # noqa: E402


def test_split_holds_out_the_last_chapters_and_what_follows_them():
    novel = ["ETYMOLOGY.", "CHAPTER 1. Loomings.", "Call me Ishmael.", "CHAPTER 2. The Carpet-Bag.",
             "I stuffed a shirt.", "CHAPTER 3. The Spouter-Inn.", "Entering that gable-ended inn.",
             "Epilogue", "The drama's done."]
    train, held_out = split_held_out(novel, 2)
    assert train == novel[:3]
    assert held_out == novel[3:]  # the epilogue has no chapter heading: it stays with the last chapter
    assert not set(train) & set(held_out)
    with pytest.raises(ValueError, match="3 chapter headings, cannot hold out 3"):
        split_held_out(novel, 3)


def test_moby_dick_fixture_is_the_held_out_split():
    """The committed Moby Dick fixture is what corpus.py holds out: the last chapters and the epilogue."""
    paragraphs = (FIXTURES / "moby-dick-ch133-135.txt").read_text(encoding="utf-8").split("\n\n")
    headings = [p for p in paragraphs if is_chapter_heading(p)]
    assert len(headings) == HELD_OUT_MOBY_CHAPTERS
    assert headings[0] == paragraphs[0] == "CHAPTER 133. The Chase--First Day."
    assert headings[-1] == "CHAPTER 135. The Chase.--Third Day."
    assert "Epilogue" in paragraphs and paragraphs[-1].rstrip().endswith("only found another orphan.")


def schedule(kind: str, steps: int) -> SimpleNamespace:
    return SimpleNamespace(schedule=kind, steps=steps, warmup=10, lr=2e-3, min_lr=1e-4, decay_frac=0.2)


@pytest.mark.parametrize("kind", ["cosine", "wsd"])
def test_schedules_warm_up_linearly_and_end_at_min_lr(kind):
    args = schedule(kind, 100)
    assert [learning_rate(s, args) for s in (0, 4, 9)] == pytest.approx([2e-4, 1e-3, 2e-3])
    assert learning_rate(99, args) == pytest.approx(1e-4, rel=0.05 if kind == "cosine" else 1e-9)
    lrs = [learning_rate(s, args) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # never rises after the warmup


def test_wsd_before_its_decay_does_not_depend_on_the_step_count():
    """What lets a run be shortened on --resume and still equal a run planned that short."""
    long, short = schedule("wsd", 1400), schedule("wsd", 1000)
    assert [learning_rate(s, long) for s in range(800)] == [learning_rate(s, short) for s in range(800)]
    assert learning_rate(799, short) == 2e-3 and learning_rate(800, short) < 2e-3
    assert learning_rate(1000, long) == 2e-3  # the longer run is still at its peak there
