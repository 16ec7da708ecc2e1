"""The prompt window: pinned memory, newest story tokens, cuts that stay put across requests."""
import pytest

from engine.context import ContextShifter
from engine.errors import SettingsError

MEMORY = [900, 901, 902]


def test_short_story_is_kept_whole():
    w = ContextShifter().fit(MEMORY, list(range(50)), n_ctx=100, max_new_tokens=20)
    assert w.tokens == MEMORY + list(range(50))
    assert (w.memory_tokens, w.dropped_tokens) == (3, 0)


def test_long_story_keeps_memory_and_the_newest_text():
    story = list(range(200))
    w = ContextShifter(shift_fraction=0.25).fit(MEMORY, story, n_ctx=100, max_new_tokens=20)
    # Budget for the story: 100 - 20 - 3 = 77 tokens; 123 must go, plus a quarter of the
    # budget (19) so the next requests can grow without moving the cut.
    assert w.dropped_tokens == 123 + 19
    assert w.tokens == MEMORY + story[142:]
    assert len(w.tokens) + 20 <= 100


def test_continuing_a_story_keeps_the_cut_until_it_no_longer_fits():
    shifter = ContextShifter(shift_fraction=0.25)
    story = list(range(200))
    first = shifter.fit(MEMORY, story, 100, 20)
    for extra in range(1, 20):                      # up to 19 more tokens fit the slack
        longer = story + list(range(1000, 1000 + extra))
        w = shifter.fit(MEMORY, longer, 100, 20)
        assert w.dropped_tokens == first.dropped_tokens
        assert w.tokens[:len(first.tokens)] == first.tokens       # same prefix: the cache is reused
    w = shifter.fit(MEMORY, story + list(range(1000, 1020)), 100, 20)
    assert w.dropped_tokens > first.dropped_tokens
    assert w.tokens[:3] == MEMORY and len(w.tokens) + 20 <= 100


def test_a_different_story_gets_a_fresh_cut():
    shifter = ContextShifter(shift_fraction=0.5)
    shifter.fit([], list(range(300)), 100, 20)                   # cut at 220 + 40 = 260
    other = list(range(5000, 5190))
    w = shifter.fit([], other, 100, 20)
    assert w.dropped_tokens == 110 + 40
    assert w.tokens == other[150:]


def test_changed_memory_gets_a_fresh_cut():
    shifter = ContextShifter(shift_fraction=0.5)
    story = list(range(300))
    a = shifter.fit([1], story, 100, 20)
    b = shifter.fit([1, 2, 3, 4, 5], story, 100, 20)
    assert a.dropped_tokens == 221 + 39
    assert b.dropped_tokens == 225 + 37


def test_no_room_to_generate_names_the_setting():
    with pytest.raises(SettingsError) as err:
        ContextShifter().fit([], [1, 2, 3], n_ctx=64, max_new_tokens=64)
    assert err.value.setting == "max_tokens"
    with pytest.raises(SettingsError) as err:
        ContextShifter().fit(list(range(60)), [1, 2, 3], n_ctx=64, max_new_tokens=4)
    assert err.value.setting == "memory"


def test_memory_alone_may_fill_the_budget_when_there_is_no_story():
    w = ContextShifter().fit(list(range(60)), [], n_ctx=64, max_new_tokens=4)
    assert w.tokens == list(range(60))
