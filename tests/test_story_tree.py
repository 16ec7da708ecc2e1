"""The story tree without a window: passages, typing, branches, one undo history, and the
files that hold the tree (story format 2, version 1 files, Kobold Lite, Markdown outline)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.passages import MODEL, WRITER, StoryTree, Token, TreeError
from app.story import STORY_VERSION, ChatTurn, Story, StoryFormatError, load_story, story_bytes

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stories"


@dataclass(frozen=True)
class Piece:
    """What the worker streams (app.chatllm.TokenPiece has these fields)."""
    text: str
    token: int
    probability: float
    alternatives: tuple = ()


def pieces(*words: str) -> list[Piece]:
    return [Piece(w, 100 + i, 0.5 / (i + 1), ((w, 100 + i, 0.5 / (i + 1)), ("x", 7, 0.1))) for i, w in enumerate(words)]


def texts(tree: StoryTree) -> list[tuple[str, str]]:
    return [(p.author, p.text) for p in tree.path()]


# --- shape and moves ------------------------------------------------------------------

def test_generations_are_children_and_the_path_is_the_text():
    s = Story("Once upon")
    first = s.add_generation(" a time", tokens=pieces(" a", " time"), seed=3, sampler={"top_k": 5}, model="m")
    s.tree.go_to(0)
    second = s.add_generation(" the sea", go=False)
    assert s.text == "Once upon" and s.tree.current == 0
    assert s.tree.root.children == (first.id, second.id)
    assert s.tree.sibling_position(second.id) == (2, 2)
    s.tree.go_to(first.id)
    assert s.text == "Once upon a time"
    node = s.tree[first.id]
    assert (node.seed, node.sampler, node.model, node.author) == (3, {"top_k": 5}, "m", MODEL)
    assert [(t.text, t.start, t.token) for t in node.tokens] == [(" a", 0, 100), (" time", 2, 101)]
    assert node.tokens[1].alternatives[1] == ("x", 7, 0.1)


def test_sibling_moves_wrap_and_follow_the_remembered_path():
    s = Story("A")
    b = s.add_generation("B")
    c = s.add_generation("C")                  # a child of B
    s.tree.go_to(0)
    d = s.add_generation("D")
    assert s.text == "AD" and s.tree.sibling_position(d.id) == (2, 2)
    assert s.tree.move_sibling(+1) and s.text == "ABC" and s.tree.current == c.id   # B's remembered way down
    assert s.tree.move_sibling(+1, b.id) and s.text == "AD"
    assert s.tree.move_sibling(-1) and s.text == "ABC"
    assert not s.tree.move_sibling(+1)         # C has no sibling
    assert s.tree.move_parent() and s.text == "AB"
    assert s.tree.move_child() and s.text == "ABC"
    assert not s.tree.move_child()
    s.tree.go_to(0)
    assert not s.tree.move_parent()


def test_delete_a_branch_moves_to_its_neighbour():
    s = Story("A")
    b = s.add_generation("B")
    s.tree.go_to(0)
    c = s.add_generation("C")
    s.add_generation("D")
    assert s.tree.delete(c.id) == [c.id, c.id + 1]
    assert s.text == "AB" and s.tree.current == b.id and len(s.tree) == 2
    s.tree.delete(b.id)
    assert s.text == "A" and s.tree.current == 0
    with pytest.raises(TreeError, match="root"):
        s.tree.delete(0)
    with pytest.raises(TreeError, match="no passage 99"):
        s.tree.delete(99)


def test_choosing_a_token_alternative_branches_at_that_token():
    s = Story("The cat")
    gen = s.add_generation(" sat on the mat", tokens=pieces(" sat", " on", " the", " mat"))
    s.add_generation(" It purred.")
    offset = len("The cat sat on")
    branch = s.branch_with_token(offset, " a", 5, 0.2)
    assert s.text == "The cat sat on a"
    head, tail = s.tree[gen.id], s.tree[gen.id + 2]
    assert head.text == " sat on" and [t.text for t in head.tokens] == [" sat", " on"]
    assert tail.text == " the mat" and [(t.text, t.start) for t in tail.tokens] == [(" the", 0), (" mat", 4)]
    assert s.tree[branch.parent] == head and head.children == (tail.id, branch.id)
    assert s.tree[tail.id].children and s.tree.text(s.tree.descend(tail.id)) == "The cat sat on the mat It purred."
    assert branch.tokens == (Token(" a", 5, 0.2, (), 0),)
    s.tree.append_tokens(branch.id, pieces(" rug"))
    assert s.text == "The cat sat on a rug" and s.tree.sibling_position(branch.id) == (2, 2)


def test_bookmarks_and_the_offset_map():
    s = Story("Ab")
    gen = s.add_generation("cd", tokens=pieces("c", "d"))
    s.text = "Abcdef"
    s.tree.set_bookmark(gen.id)
    assert s.tree.bookmarks() == [gen.id]
    assert [(sp.start, sp.end, sp.passage.author) for sp in s.tree.spans()] == [(0, 2, WRITER), (2, 4, MODEL),
                                                                                 (4, 6, WRITER)]
    assert s.tree.passage_at(3).id == gen.id and s.tree.passage_at(6).author == WRITER
    assert [(a, b, t.text) for a, b, t, _ in s.tree.token_spans()] == [(2, 3, "c"), (3, 4, "d")]


# --- typing belongs to passages ---------------------------------------------------------

def test_typing_at_the_end_extends_the_writers_passage_or_starts_one():
    s = Story()
    s.text = "Hello"
    assert texts(s.tree) == [(WRITER, "Hello")]
    s.add_generation(" world")
    s.text += " again"
    s.text += "!"
    assert texts(s.tree) == [(WRITER, "Hello"), (MODEL, " world"), (WRITER, " again!")]
    s.tree.move_parent()                       # the model passage is current again, with a child
    s.text += " and"
    assert texts(s.tree) == [(WRITER, "Hello"), (MODEL, " world"), (WRITER, " and")]
    assert s.tree.sibling_position(s.tree.current) == (2, 2)


def test_typing_inside_generated_text_marks_it_edited_and_keeps_untouched_tokens():
    s = Story("X")
    gen = s.add_generation(" one two three", tokens=pieces(" one", " two", " three"))
    s.text = "X one tXwo three"
    node = s.tree[gen.id]
    assert node.edited and node.text == " one tXwo three"
    assert [(t.text, t.start) for t in node.tokens] == [(" one", 0), (" three", 9)]   # " two" was cut
    assert node.tokens[1].alternatives and s.tree[0].text == "X"
    assert s.generations == []                 # an edited passage is no longer a pure generation


def test_boundary_typing_goes_to_the_writers_passage_and_deletions_span_passages():
    s = Story("Ab")
    gen = s.add_generation("cd", tokens=pieces("c", "d"))
    s.text = "Abcd."
    s.text = "AbXcd."                          # between the writer's "Ab" and the model's "cd"
    assert texts(s.tree) == [(WRITER, "AbX"), (MODEL, "cd"), (WRITER, ".")]
    assert not s.tree[gen.id].edited
    s.text = "Ab."                             # select "Xcd" and delete it
    assert texts(s.tree) == [(WRITER, "Ab"), (MODEL, ""), (WRITER, ".")]
    assert s.tree[gen.id].edited and s.tree[gen.id].tokens == ()


# --- one history ------------------------------------------------------------------------

def test_one_history_for_typing_generations_moves_and_deletions():
    s = Story("Start")
    s.checkpoint("open")
    s.text = "Start here"                      # typing
    s.checkpoint("edit")
    a = s.add_generation(" and there")         # generation
    s.checkpoint("generation")
    s.retry_point()
    b = s.add_generation(" or elsewhere")      # retry: a sibling
    s.checkpoint("generation")
    s.tree.move_sibling(-1)                    # branch move
    s.checkpoint("move")
    s.tree.delete(b.id)                        # deletion
    s.checkpoint("delete")
    assert b.id not in s.tree and s.text == "Start here and there"
    assert s.undo() and b.id in s.tree and s.text == "Start here and there"
    assert s.undo() and s.text == "Start here or elsewhere"
    assert s.undo() and s.text == "Start here and there" and s.tree.root.children == (a.id,)
    assert s.undo() and s.text == "Start here"
    assert s.undo() and s.text == "Start"
    assert not s.undo()
    for expected in ("Start here", "Start here and there", "Start here or elsewhere", "Start here and there",
                     "Start here and there"):
        assert s.redo() and s.text == expected
    assert b.id not in s.tree and not s.redo()


def test_matches_saved_after_undo_back_to_the_saved_text():
    s = Story("Saved text")
    s.mark_saved()
    s.text = "Saved text, then more"
    s.checkpoint("edit")
    assert not s.matches_saved()
    s.undo()
    assert s.matches_saved()


def test_a_regenerated_chat_turn_is_a_sibling():
    s = Story()
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hello!")]
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hey there.")]
    assert [t.text for t in s.chat_turns] == ["Hi", "Hey there."]
    assert s.chat.sibling_position(s.chat.current) == (2, 2)
    s.chat.move_sibling(-1)
    assert s.chat_turns[-1].text == "Hello!"
    s.edit_chat_turn(1, "Hello, friend!")
    assert s.chat_turns[-1].text == "Hello, friend!" and s.chat[s.chat.current].edited


# --- story format 2 ---------------------------------------------------------------------

def branched_story() -> Story:
    s = Story("The ship sailed.", title="Voyage", show_probabilities=True, model_id="pythia-70m")
    a = s.add_generation(" It sank.", tokens=[Piece(" It", 1, 0.25, ((" It", 1, 0.25), (" She", 2, 0.2))),
                                              Piece(" sank.", 3, math.nan, ())], seed=7, sampler={"top_k": 40})
    s.tree.go_to(0)
    s.add_generation(" It flew.", seed=8)
    s.tree.go_to(a.id)
    s.text += " Nobody came."
    s.tree.set_bookmark(a.id)
    s.chat_turns = [ChatTurn("user", "Hello"), ChatTurn("bot", "Hi Ann")]
    s.chat_turns = [ChatTurn("user", "Hello"), ChatTurn("bot", "Hey")]
    return s


def test_format_2_round_trips_the_whole_tree(tmp_path):
    s = branched_story()
    path = tmp_path / "s.neoxstory.json"
    path.write_bytes(story_bytes(s))
    back = load_story(path)
    assert back.to_json() == s.to_json() and json.loads(path.read_bytes())["version"] == STORY_VERSION == 2
    assert back.text == "The ship sailed. It sank. Nobody came." and back.show_probabilities
    assert back.tree.nodes == s.tree.nodes and back.tree.current == s.tree.current
    tokens = back.tree[1].tokens
    assert tokens[0].probability == 0.25 and math.isnan(tokens[1].probability)
    assert tokens[0].alternatives == ((" It", 1, 0.25), (" She", 2, 0.2))
    assert back.chat.sibling_position(back.chat.current) == (2, 2)


def test_version_1_files_open_as_one_branch():
    s = load_story(FIXTURES / "voyage-v1.json")
    assert texts(s.tree) == [(WRITER, "The ship sailed."), (MODEL, " It sank."), (WRITER, " Nobody came.")]
    assert s.tree[1].seed == 7 and s.tree[1].model == "pythia-70m"
    assert [(t.role, t.text) for t in s.chat_turns] == [("user", "Hello"), ("bot", "Hi!")]
    assert s.memory == "Captain Ahab." and s.sampler["top_k"] == 100


def test_a_newer_version_is_refused_naming_both(tmp_path):
    data = branched_story().to_json()
    data["version"] = 3
    path = tmp_path / "new.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StoryFormatError, match="version 3; this version reads up to 2"):
        load_story(path)


def _corrupt(data, change):
    passages = data["tree"]["passages"]
    change(data, passages)
    return data


@pytest.mark.parametrize("change, needle", [
    (lambda d, p: p.append(dict(p[1])), "appears twice"),
    (lambda d, p: p[1].update(parent=42), "has parent 42"),
    (lambda d, p: p.__setitem__(0, {**p[0], "parent": 1}), "root passage"),
    (lambda d, p: (p[1].update(parent=3), p[3].update(parent=1)), "not reachable"),
    (lambda d, p: p[0].update(chosen=3), "not one of its children"),
    (lambda d, p: d["tree"].update(current=77), "'tree.current' is 77"),
    (lambda d, p: p[1]["tokens"][0].__setitem__(0, 5), "is not at 5"),
    (lambda d, p: p[1]["tokens"][0].__setitem__(3, 1.5), "probability 1.5"),
    (lambda d, p: p[1]["tokens"].__setitem__(0, {"text": " It"}), "[start, text, id, probability, alternatives]"),
    (lambda d, p: p[1].update(author="ghost"), "passages[1].author"),
    (lambda d, p: d["tree"].update(passages=[]), "is empty"),
    (lambda d, p: p[2].pop("id"), "'tree.passages[2].id' is missing"),
])
def test_corrupt_trees_name_the_problem(tmp_path, change, needle):
    data = _corrupt(branched_story().to_json(), change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StoryFormatError) as e:
        load_story(path)
    assert needle in str(e.value) and str(path) in str(e.value)


# --- exports ----------------------------------------------------------------------------

def test_exports_write_the_current_path_and_markdown_can_outline_the_tree():
    s = branched_story()
    assert s.to_plain_text() == "The ship sailed. It sank. Nobody came."
    lite = s.to_kobold()
    assert lite["prompt"] == "The ship sailed." and lite["actions"] == [" It sank.", " Nobody came."]
    assert "It flew" not in s.to_markdown() and "The ship sailed. It sank. Nobody came." in s.to_markdown()
    outline = s.to_markdown(whole_tree=True)
    assert outline.splitlines()[2:] == [
        "- **The ship sailed.**",
        "  - ★ **It sank.** *(model)*",
        "    - **Nobody came.**",
        "  - It flew. *(model)*",
    ]


# --- Kobold Lite ------------------------------------------------------------------------

def test_lite_numeric_strings_and_fields_are_imported():
    s = load_story(FIXTURES / "lite-v180.json")
    assert s.authors_note_depth == 160                 # "anotestr": "640" characters, 4 a token
    assert s.text.startswith("The tavern was quiet") and len(s.tree) == 3
    assert s.sampler["temperature"] == 0.75 and s.sampler["top_k"] == 100 and s.sampler["n_ctx"] == 2048
    assert s.sampler["presence_penalty"] == 0.3 and s.sampler["dry_multiplier"] == 0.8
    assert s.sampler["order"] == ["rep_pen", "top_k", "top_a", "tfs", "typical", "top_p", "temperature"]
    assert s.sampler["logit_bias"] == {"50256": -100, "464": 2.5}
    assert s.sampler["banned_phrases"] == ["shivers down", "barely above a whisper"]
    assert s.stop_sequences == ["###", "\\n\\n\\n"] and s.mode == "story"
    assert s.world_info[0].keys == ["knight", "stranger"] and s.world_info[1].always_on


def test_lite_chat_mode_is_imported_with_its_turns(tmp_path):
    data = json.loads((FIXTURES / "lite-v180.json").read_text(encoding="utf-8"))
    data.update(prompt="A chat.\nUser: Hi there\nKoboldAI: Hello!", actions=["\nUser: Bye"])
    data["savedsettings"]["opmode"] = 3
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    s = load_story(path)
    assert s.mode == "chat" and (s.user_name, s.bot_name) == ("User", "KoboldAI")
    assert [(t.role, t.text) for t in s.chat_turns] == [("user", "Hi there"), ("bot", "Hello!"), ("user", "Bye")]


def _numbers_as_numbers(value):
    """Lite reads "0.75" and 0.75 alike, so the round trip compares them as one."""
    if isinstance(value, dict):
        return {k: _numbers_as_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def test_a_lite_v180_save_round_trips_through_a_native_file(tmp_path):
    original = json.loads((FIXTURES / "lite-v180.json").read_text(encoding="utf-8"))
    native = tmp_path / "s.json"
    native.write_bytes(story_bytes(load_story(FIXTURES / "lite-v180.json")))
    exported = load_story(native).to_kobold()
    assert set(exported) >= set(original)
    for key in original:
        assert _numbers_as_numbers(exported[key]) == _numbers_as_numbers(original[key]), key


def test_tokens_take_the_text_the_view_shows():
    s = Story("A")
    node = s.add_generation("x\ny z", tokens=[Piece("x\r", 1, 0.5), Piece("y\xa0z", 2, 0.5)])   # as Qt shows them
    assert [t.text for t in node.tokens] == ["x\n", "y z"]
    assert s.add_generation("other", tokens=[Piece("x\r", 1, 0.5)]).tokens == ()
    streamed = s.tree.append_tokens(s.tree.add_child(0, "", MODEL).id, [Piece("a\u2029b", 3, 0.5)])
    assert streamed.text == "a\nb"


def test_autosave_and_recovery_keep_the_whole_tree(tmp_path, monkeypatch):
    from app.autosave import autosave_bytes, autosave_path, find_recovery, write_atomic
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path))
    s = branched_story()
    write_atomic(autosave_path(), autosave_bytes(s, None))
    recovered = find_recovery().story
    assert recovered.tree.nodes == s.tree.nodes and recovered.chat.nodes == s.chat.nodes
    assert recovered.show_probabilities


def test_the_file_text_is_the_json_of_the_story_and_follows_changes():
    s = branched_story()
    assert json.loads(story_bytes(s)) == s.to_json()
    s.tree.append_tokens(s.tree.current, [Piece(" Then", 9, 0.3)])     # a new passage object: written anew
    s.tree.set_bookmark(0)
    assert json.loads(story_bytes(s)) == s.to_json()
    from app.autosave import autosave_bytes
    record = json.loads(autosave_bytes(s, "/a/story.json"))
    assert record["story"] == s.to_json() and record["story_path"] == "/a/story.json"
