"""How the window looks: where the panels dock, the light/dark theme, the story's font size and the
window's geometry (the last three kept in the settings)."""
from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QDockWidget, QTabWidget

THEMES = ("system", "light", "dark")
DOCKS = {"models": ("Models", Qt.LeftDockWidgetArea), "sampling": ("Sampling", Qt.RightDockWidgetArea),
         "memory": ("Memory · World info", Qt.RightDockWidgetArea), "context": ("Context", Qt.RightDockWidgetArea),
         "server": ("API server", Qt.RightDockWidgetArea)}


def dark_palette() -> QPalette:
    """A dark palette for platforms that do not switch schemes themselves."""
    p = QPalette()
    base, window, text, mid = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229), QColor(70, 73, 78)
    for role, colour in ((QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base),
                         (QPalette.AlternateBase, window), (QPalette.Text, text), (QPalette.Button, window),
                         (QPalette.ButtonText, text), (QPalette.ToolTipBase, window), (QPalette.ToolTipText, text),
                         (QPalette.PlaceholderText, QColor(130, 133, 138)), (QPalette.Mid, mid),
                         (QPalette.Highlight, QColor(66, 133, 244)), (QPalette.HighlightedText, QColor(255, 255, 255)),
                         (QPalette.Link, QColor(110, 168, 254))):
        p.setColor(role, colour)
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor(120, 123, 128))
    return p


def dock_panels(window, panels: dict) -> dict:
    """Put each panel in its dock: the model list on the left, the rest tabbed on the right,
    sampling in front. Returns the docks by key (their object names are "<key>Dock")."""
    docks = {}
    for key, panel in panels.items():
        title, area = DOCKS[key]
        docks[key] = QDockWidget(title, window, objectName=f"{key}Dock")
        docks[key].setWidget(panel)
        window.addDockWidget(area, docks[key])
    # tabs down the side: each label has the dock's height to itself, so none is cut at any width
    window.setTabPosition(Qt.RightDockWidgetArea, QTabWidget.East)
    tabbed = [docks[key] for key in panels if DOCKS[key][1] == Qt.RightDockWidgetArea]
    for first, second in zip(tabbed, tabbed[1:]):
        window.tabifyDockWidget(first, second)
    tabbed[0].raise_()
    return docks


class Appearance:
    """Applies the theme and the font size to the application and the story view, and restores
    and saves the window's geometry and dock layout."""

    def __init__(self, settings, story_view, write_settings):
        """`write_settings()` writes the settings file (on the writer thread)."""
        self.settings = settings
        self.story_view = story_view
        self.write_settings = write_settings
        self._own_palette = False
        self._system_style = QApplication.style().name()    # the platform's, for "Follow the system"

    def set_font_size(self, points: int, save: bool = True) -> None:
        points = max(7, min(40, int(points)))
        self.settings.set("font_size", points)
        self.story_view.set_font_size(points)
        if save:
            self.write_settings()

    def zoom(self, step: int) -> None:
        self.set_font_size(self.settings.get("font_size") + step)

    def set_theme(self, theme: str, save: bool = True) -> None:
        """"system" follows the desktop's light/dark scheme; "light"/"dark" force one.

        Qt (6.8+) switches the platform style itself where it can; where the platform ignores
        the request, the Fusion style with our own palette stands in.
        """
        theme = theme if theme in THEMES else "system"
        hints = QGuiApplication.styleHints()
        wanted = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(theme, Qt.ColorScheme.Unknown)
        if hasattr(hints, "setColorScheme"):
            hints.setColorScheme(wanted)
        app = QApplication.instance()
        if theme != "system" and hints.colorScheme() != wanted:
            app.setStyle("Fusion")
            app.setPalette(dark_palette() if theme == "dark" else app.style().standardPalette())
            self._own_palette = True
        elif self._own_palette:       # back to the platform's own style and colours (Fusion stood in)
            app.setStyle(self._system_style)
            app.setPalette(app.style().standardPalette())
            self._own_palette = False
        self.story_view.refresh_mark()
        self.settings.set("theme", theme)
        if save:
            self.write_settings()

    def on_theme_group_triggered(self, action) -> None:
        self.set_theme(action.data())

    def restore(self, window, docks: dict) -> None:
        """Font, theme, geometry and dock layout as the settings say (first run: a sensible size)."""
        s = self.settings
        self.set_font_size(s.get("font_size"), save=False)
        self.set_theme(s.get("theme"), save=False)
        for key, setter in (("window_geometry", window.restoreGeometry), ("window_state", window.restoreState)):
            if s.get(key):
                setter(QByteArray.fromBase64(s.get(key).encode("ascii")))
        if not s.get("window_geometry"):
            window.resize(1280, 800)
        if not s.get("window_state"):   # first run: room for model names and sampler labels
            em = window.fontMetrics().horizontalAdvance("M")
            QTimer.singleShot(0, window, lambda: window.resizeDocks([docks["models"], docks["sampling"]],
                                                                    [em * 32, em * 30], Qt.Horizontal))

    def save(self, window) -> None:
        """Remember the window's geometry and dock layout (written with the other settings)."""
        self.settings.set("window_geometry", bytes(window.saveGeometry().toBase64()).decode("ascii"))
        self.settings.set("window_state", bytes(window.saveState().toBase64()).decode("ascii"))
