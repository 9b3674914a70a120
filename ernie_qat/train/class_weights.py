"""`train.class_weights: balanced`: a cross-entropy that weighs each class by the inverse of its frequency.

With n training examples in k classes, n_c of class c, class c's weight is w_c = n / (k * n_c) (scikit-learn's
"balanced"): each class then carries the same total weight, n / k, however rare it is. A batch's loss is the
weighted mean, sum_i w_{y_i} * loss_i / sum_i w_{y_i}, as Paddle's `cross_entropy(weight=...)` computes it.
"""
from typing import Sequence

import numpy as np


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """float32 [num_classes]: n / (k * n_c) for the class indices `labels` of the training examples.

    Raises:
        ValueError: a class has no training example (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"class {int(np.argmin(counts))} of {num_classes} has no training example")
    return (len(labels) / (num_classes * counts)).astype(np.float32)
