"""Pictures a person looks at: the confusion matrix of a classification eval."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def plot_confusion_matrix(
    matrix: list[list[int]], labels: list[str], path: Path, title: str
) -> None:
    """Counts with true classes as rows and predicted classes as columns, colour by row share."""
    n = len(labels)
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for row in range(n):
            for col in range(n):
                ax.text(
                    col,
                    row,
                    str(matrix[row][col]),
                    ha="center",
                    va="center",
                    color="white" if shares[row][col] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
