"""NeoX Writer desktop application: the PySide6 program and the headless model manager."""
