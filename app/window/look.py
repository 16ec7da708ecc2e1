"""The app's look: one style sheet over the active palette (light or dark) that gives the story
the centre (a frameless page; `WritingTools` lays the desk around it), calmer panels (titles, spacing) and
roomier controls than Qt's defaults. Colours come from the palette, so the sheet follows the
theme: `WritingTools` sets it again after each switch, on the bars, the docks and the find bar
only (a style sheet on the window or the application would also govern the story view, whose
font the writer chooses)."""
from __future__ import annotations

from PySide6.QtGui import QColor, QPalette


def _mix(a: QColor, b: QColor, t: float) -> str:
    """`a` moved by `t` (0..1) towards `b`, as #rrggbb."""
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t)).name()


def style_sheet(palette: QPalette) -> str:
    window, text = palette.color(QPalette.Window), palette.color(QPalette.Text)
    accent = palette.color(QPalette.Highlight)
    rule = _mix(window, text, 0.18)                                     # hairlines between areas
    hover = _mix(window, accent, 0.16)
    muted = _mix(text, window, 0.35)
    return f"""
QDockWidget {{ font-size: 9.5pt; }}
QDockWidget::title {{ padding: 7px 10px; background: {window.name()}; border-bottom: 1px solid {rule}; }}
QToolBar#mainToolBar {{ spacing: 4px; padding: 4px 8px; border: none; border-bottom: 1px solid {rule}; }}
QToolBar#mainToolBar QToolButton {{ padding: 4px 12px; border-radius: 6px; }}
QToolBar#mainToolBar QToolButton:hover {{ background: {hover}; }}
QToolBar#mainToolBar QToolButton#generateButton:enabled {{ background: {accent.name()};
    color: {palette.color(QPalette.HighlightedText).name()}; font-weight: 600; }}
QStatusBar {{ border-top: 1px solid {rule}; }}
QStatusBar QLabel {{ color: {muted}; padding: 0 6px; }}
QTabBar::tab {{ padding: 10px 5px; }}
QTabBar::tab:selected {{ color: {accent.name()}; }}
QWidget#findBar {{ background: {window.name()}; border-top: 1px solid {rule}; }}
QTreeWidget#modelTree {{ border: none; }}
QTreeWidget#modelTree::item {{ padding: 3px 0px; }}
"""
