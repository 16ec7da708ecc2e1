"""The GUI thread keeps its frames while a fast model streams (issue 16): over a 400-token
generation by a tiny model (several hundred tokens a second: 360-1080 measured here), a 5 ms
timer in the GUI thread never waits more than 33 ms, two frames at 60 Hz.

Where the time went (profiled: tests/event_loop_gaps.py around each slot): every batch of tokens
rebuilt the marks of every token shown (a QTextEdit extra selection per token with probability
colours on), time growing with the story: 64-127 ms a batch, gaps of a second, once a story held
1,250-1,650 generated tokens; now a batch adds marks for its own tokens only (11-16 ms at that
size on the same loaded machine, 1.4-7 ms with the plain tint). The story tree walked every
passage each batch; it now follows the stream 4 times a second. Full garbage collections are
kept off the stream (gc.freeze when a generation starts, app/chatllm.py) and the engine thread
hands the GIL back every 1 ms instead of 5.

What remained (a single generation's worst gap 18-67 ms by the wall clock on a quiet machine,
the first generation of a window as often as a later one): the GUI thread asleep on the GIL's
futex for 20-50 ms at a time (its state sampled from /proc every 0.3 ms by another process, its
CPU time a third of the gap). CPython takes the GIL from a running thread only when a waiter has
waited a whole switch interval with no switch in between, and the engine's own short releases
(numpy's BLAS calls) count as switches, so the waiter's clock kept starting again. The engine
thread now sleeps 0.1 ms every 2 ms of generating (app.threads.GilHandover): worst gaps 11-18 ms,
the same tokens per second, so each of three generations is held to the limit, not the best of
them. Each story-tree refresh during the stream also repainted the streaming passage, dozens of
calls into its Python model; a passage is now repainted only when its row reads differently.

CI once measured 35 ms in a third generation (a story of one 1,800-character paragraph). Each
batch had added a mark (an extra selection) over the stream, all of them growing with the text,
and QPlainTextEdit draws every mark over every line of its paragraph at each repaint: 7.9 ms a
repaint with 50 marks against 3.2 with one. Touching marks of one colour are now one
(tests/test_story_marks.py); the window's Python event filter (called for every paint and layout
request of the window, five a batch) became a `resized` signal; the speed label is updated 4
times a second instead of every batch; the spell checker starts no timer during a stream.
Third-generation worst gaps went from 18-26 ms to 12-18 (one run of six 30) on the same machine.

On a machine shared with other work the operating system may leave the GUI thread waiting for a
processor although it is ready to run; that wait is not the program's doing, so where Linux
reports it it is taken off each gap (an allowance for a loaded machine: on an idle one it is zero
and the gaps are the wall-clock ones). Waiting for the GIL (held by the engine thread) is a
sleep, not a run-queue wait: it counts.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.ggml_writer import write_ggml  # noqa: E402
from event_loop_gaps import EventLoopGaps  # noqa: E402
from modelgen import TINY_FIXTURE, random_tensors, random_vocab  # noqa: E402
from test_app_window import generate, home, window  # noqa: E402,F401  (fixtures)

TOKENS = 400
MAX_GAP = 0.033
HPARAMS = dict(n_vocab=320, n_ctx=1024, n_embd=64, n_head=4, n_layer=2, n_rot=16, par_res=1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):     # the model test_app_window's `window` fixture opens
    """A tiny model with room for 400 new tokens that never ends early: its final layer norm
    makes every position's output the same vector, against which end-of-text scores -100."""
    folder = tmp_path_factory.mktemp("streaming")
    tensors = random_tensors(HPARAMS, seed=5)
    tensors["gpt_neox.final_layer_norm.weight"][:] = 0.0
    out_bias = tensors["gpt_neox.final_layer_norm.bias"]
    tensors["embed_out.weight"][0] = -100.0 * out_bias / float(out_bias @ out_bias)
    path = folder / "streaming.bin"
    write_ggml(path, HPARAMS, random_vocab(HPARAMS["n_vocab"]), tensors, ftype="f32")
    shutil.copy(TINY_FIXTURE / "tokenizer.json", folder / "tokenizer.json")
    return path


def measure(qtbot, window, prompt: str) -> tuple[float, str]:
    """One 400-token generation under a 5 ms timer: (the longest gap, a line describing the run)."""
    start = time.perf_counter()
    before = len(window.document.story.text)
    with EventLoopGaps(5) as loop:
        generate(qtbot, window, prompt, max_tokens=TOKENS, seed=7)
        seconds = time.perf_counter() - start
    assert len(window.document.story.text) - before > TOKENS // 2      # it streamed to the end
    assert len(loop.gaps) >= 20
    return loop.longest, (f"{TOKENS} tokens in {seconds:.2f} s ({TOKENS / seconds:.0f} tok/s), {len(loop.gaps)} "
                          f"ticks, worst gaps {loop.worst()} ms ({loop.longest_wall * 1000:.1f} ms by the wall clock)")


def test_the_longest_event_loop_gap_of_each_400_token_generation_is_two_frames(qtbot, window):
    # Three generations, each held to the limit (the story grows with each: a longer document
    # to lay out, a larger story tree); on a loaded machine the run-queue wait is allowed for.
    runs = []
    for _ in range(3):
        longest, line = measure(qtbot, window, None if runs else "Once upon a time")
        runs.append((longest, line))
        print(line)
    assert all(longest <= MAX_GAP for longest, _ in runs), \
        "the GUI thread stalled longer than 33 ms:\n" + "\n".join(line for _, line in runs)
