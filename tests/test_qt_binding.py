"""The Qt binding itself: PySide6 6.12.0 lost a reference to True on every Signal.emit and to None in
processEvents, which aborts a long session with "Fatal Python error: bool_dealloc". The app emits a
signal per token batch, so a binding with that bug must never be installed."""
import sys

from PySide6.QtCore import QCoreApplication, QObject, Signal


class Emitter(QObject):
    """A QObject with one signal carrying an int."""

    fired = Signal(int)


def test_signal_emit_keeps_reference_counts_of_singletons():
    app = QCoreApplication.instance() or QCoreApplication([])
    emitter = Emitter()
    received = []
    emitter.fired.connect(received.append)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(500):
        emitter.fired.emit(i)
        app.processEvents()
    assert len(received) == 500
    # a little slack for unrelated interpreter activity, far below the 500 the bug loses
    assert abs(sys.getrefcount(True) - true_before) < 50
    assert abs(sys.getrefcount(None) - none_before) < 50
