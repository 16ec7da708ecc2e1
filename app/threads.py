"""Handing results from Python threads back to Qt.

Work that touches the disk or the network runs on a Python thread; its result comes back as a
signal, which Qt queues to the receiver's thread. A non-widget module so that controllers and
widgets alike can use it.
"""
from __future__ import annotations


def emit_from_thread(signal, *args) -> None:
    """Emit from a background thread; the widget may have been closed meanwhile (then nobody listens)."""
    try:
        signal.emit(*args)
    except RuntimeError:
        pass
