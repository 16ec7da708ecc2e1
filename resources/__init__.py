"""Data files shipped with NeoX Writer: the model catalog, the demo model, the icon.

This folder is installed as the package ``app.resources`` (setup.py maps it there), so the
program finds these files with ``importlib.resources`` the same way in an editable install, an
installed wheel and the PyInstaller bundle. Code reaches them through ``app.bundled``.
"""
