"""The chart kit every stage draws with: headless matplotlib, a figure as PNG bytes or inline markdown.

Dagster metadata (model, CV and monitoring charts) and the executive report render figures the same
way, so a change of backend or of how a figure is saved happens here once.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: Dagster workers, CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

__all__ = ["SHORT", "markdown_image", "plt", "png_bytes", "short_amount"]


def short_amount(value: float, _position: object = None) -> str:
    """Axis numbers at a glance: 1.2k, 3.4M, 2B instead of a 1e8 offset above the axis."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


#: Axis tick formatter for amounts (``ax.yaxis.set_major_formatter(SHORT)``).
SHORT = FuncFormatter(short_amount)


def png_bytes(figure: plt.Figure, dpi: int) -> bytes:
    """The figure as PNG bytes (tight bounding box); closes the figure so workers do not leak memory."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def markdown_image(figure: plt.Figure, alt: str, dpi: int = 80) -> str:
    """The figure as an inline (base64 PNG) markdown image, as the Dagster UI renders metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png_bytes(figure, dpi)).decode()})"
