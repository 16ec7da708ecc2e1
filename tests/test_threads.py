"""GilHandover: the generating thread sleeps, the GIL released, once per `every` seconds of
work, and not more often (its cost). Its effect on the GUI thread is measured by
tests/test_gui_latency.py."""
from __future__ import annotations

from app.threads import GilHandover


class FakeTime:
    """A clock the test moves by hand; sleeping moves it too."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_gil_is_handed_over_once_per_interval_of_work():
    t = FakeTime()
    handover = GilHandover(every=0.002, pause=0.0001, clock=t.clock, sleep=t.sleep)
    for _ in range(10):            # tokens of 0.5 ms: one hand-over per 4 tokens
        t.now += 0.0005
        handover()
    assert t.sleeps == [0.0001, 0.0001]
    t.now += 0.01                  # one slow token: one hand-over, not five
    handover()
    assert len(t.sleeps) == 3


def test_no_hand_over_before_the_first_interval():
    t = FakeTime()
    handover = GilHandover(every=0.002, pause=0.0001, clock=t.clock, sleep=t.sleep)
    t.now += 0.0019
    handover()
    assert t.sleeps == []


def test_the_cost_benchmark_prints_its_table(tmp_path, capsys):
    from bench.gil_handover import main
    from modelgen import write_random_model
    path = tmp_path / "tiny.bin"
    write_random_model(path)
    assert main([str(path), "--tokens", "4", "--rounds", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| model | every |") and rows[2].startswith("| tiny.bin | 2 ms | ")
