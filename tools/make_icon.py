"""Draws the app icon (resources/icons/neox-writer.png, 256 px) with Qt, so it is made by our own code.

Run once: QT_QPA_PLATFORM=offscreen python tools/make_icon.py
"""
import sys
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication, QImage, QLinearGradient, QPainter, QPainterPath, QPen

SIZE = 256


def draw(path: Path) -> None:
    image = QImage(SIZE, SIZE, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.Antialiasing)
    # rounded page with a warm gradient
    grad = QLinearGradient(0, 0, SIZE, SIZE)
    grad.setColorAt(0, QColor("#2b3a67"))
    grad.setColorAt(1, QColor("#496a81"))
    p.setBrush(QBrush(grad))
    p.setPen(Qt.NoPen)
    p.drawRoundedRect(QRectF(8, 8, SIZE - 16, SIZE - 16), 44, 44)
    # lines of text
    p.setPen(QPen(QColor(255, 255, 255, 150), 10, Qt.SolidLine, Qt.RoundCap))
    for i, width in enumerate((150, 170, 120)):
        y = 150 + i * 28
        p.drawLine(QPointF(48, y), QPointF(48 + width, y))
    # a quill stroke
    quill = QPainterPath(QPointF(200, 40))
    quill.cubicTo(QPointF(150, 60), QPointF(110, 100), QPointF(92, 128))
    quill.cubicTo(QPointF(130, 110), QPointF(175, 85), QPointF(200, 40))
    p.setPen(Qt.NoPen)
    p.setBrush(QColor("#ffd166"))
    p.drawPath(quill)
    # the "N"
    font = QFont("DejaVu Sans", 64, QFont.Bold)
    p.setFont(font)
    p.setPen(QColor("#ffffff"))
    p.drawText(QRectF(36, 36, 110, 100), Qt.AlignLeft | Qt.AlignTop, "N")
    p.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(path)):
        sys.exit(f"could not write {path}")


if __name__ == "__main__":
    app = QGuiApplication(sys.argv)
    draw(Path(__file__).resolve().parents[1] / "resources" / "icons" / "neox-writer.png")
