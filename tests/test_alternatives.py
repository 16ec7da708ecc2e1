"""N alternatives from one Generate: N siblings at once, tokens routed to the running one,
empty ones removed, one undo step."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.alternatives import AlternativesRun
from app.story import Story


@dataclass(frozen=True)
class Piece:
    text: str
    token: int = 1
    probability: float = 0.5
    alternatives: tuple = ()


def test_four_alternatives_are_four_siblings_filled_in_turn():
    s = Story("Once")
    run = AlternativesRun(s, 4, seed=10, sampler={"top_k": 3}, model="m")
    assert len(s.tree.root.children) == 4 and s.tree.current == run.passages[0] and run.shown
    assert [s.tree[p].seed for p in run.passages] == [10, 11, 12, 13]
    for i, word in enumerate((" upon", " there", " more", " again")):
        assert run.add_pieces([Piece(word), Piece(".")]) == run.passages[i]
        assert run.finish_one() == (i < 3)
        assert not run.shown
    assert run.finish() == 4
    assert s.text == "Once upon." and [s.tree[p].text for p in run.passages] == [" upon.", " there.", " more.",
                                                                                 " again."]
    assert s.tree[run.passages[2]].sampler == {"top_k": 3} and s.tree[run.passages[2]].model == "m"
    assert s.undo() and s.text == "Once" and s.tree.root.children == ()


def test_empty_alternatives_are_removed_and_a_random_seed_is_recorded():
    s = Story("Once")
    run = AlternativesRun(s, 3)
    run.finish_one(seed=99)                   # the shown one came back empty (Stop at once)
    run.add_pieces([Piece(" twice")])
    run.finish_one(seed=100)
    assert run.finish(cancelled=True) == 1
    assert s.text == "Once twice" and len(s.tree.root.children) == 1 and s.tree[s.tree.current].seed == 100
    nothing = AlternativesRun(s, 2)
    nothing.finish_one()
    assert nothing.finish() == 0 and s.text == "Once twice"


def test_the_count_is_checked():
    with pytest.raises(ValueError, match="1..8"):
        AlternativesRun(Story(), 9)


def test_a_chosen_token_is_continued_in_its_own_passage():
    s = Story("The cat")
    s.add_generation(" sat down", tokens=[Piece(" sat"), Piece(" down")])
    branch = s.branch_with_token(len("The cat"), " ran", 9, 0.1)
    run = AlternativesRun(s, 1, seed=4, into=branch.id)
    assert run.prompt == "The cat ran" and run.passages == [branch.id]
    run.add_pieces([Piece(" away")])
    run.finish_one()
    assert run.finish() == 1 and s.text == "The cat ran away" and s.tree[branch.id].seed == 4
    assert [t.text for t in s.tree[branch.id].tokens] == [" ran", " away"]
    with pytest.raises(ValueError):
        AlternativesRun(s, 2, into=branch.id)
