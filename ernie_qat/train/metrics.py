"""Classification metrics, in percent."""
from typing import Dict, Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(labels: Sequence[int], predictions: Sequence[int]) -> Dict[str, float]:
    """accuracy, macro_f1 and mcc, each ×100."""
    return {
        "accuracy": 100.0 * accuracy_score(labels, predictions),
        "macro_f1": 100.0 * f1_score(labels, predictions, average="macro", zero_division=0),
        "mcc": 100.0 * matthews_corrcoef(labels, predictions),
    }
