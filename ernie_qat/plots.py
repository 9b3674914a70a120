"""Figures written as PNG files: matplotlib on its file-only backend, each file written atomically."""
from pathlib import Path

from ernie_qat.atomic import atomic_file


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: no display is needed or used)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_png(fig, path: Path, dpi: int = 110) -> None:
    """Lay `fig` out tightly, write it to `path` as a PNG (whole or not at all), and close it."""
    fig.tight_layout()
    with atomic_file(path, "wb") as out:
        fig.savefig(out, format="png", dpi=dpi)
    pyplot().close(fig)
