"""The Qt shell: the main window, which only wires controllers to widgets, and its parts
(actions and menus, status bar, dialogs, appearance)."""
