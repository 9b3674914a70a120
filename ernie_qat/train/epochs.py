"""`train.epochs: auto`: how many epochs to train, from the training set's size and its classes.

Fine-tuning converges in about a fixed number of optimizer updates, not epochs, so a small training set
needs more passes over it than a large one; and a class with few examples needs them seen often enough.
The rule takes the larger of the two needs, within [MIN_EPOCHS, MAX_EPOCHS]:

    epochs = clamp(max(ceil(TARGET_STEPS / steps_per_epoch), ceil(TARGET_VISITS / median class size)),
                   MIN_EPOCHS, MAX_EPOCHS)

For the built-in datasets at batch 32 it gives: rt 3, r8 4, sms 5, mr 6 (the steps rule), r52 7 (its median
class has 16 training examples: the classes rule).
"""
import math
import statistics
from collections import Counter
from typing import Hashable, Sequence, Tuple, Union

from ernie_qat.config import AUTO

TARGET_STEPS = 600    # optimizer steps a fine-tuning run should take at least
TARGET_VISITS = 100   # times the examples of a median-sized class should be seen, in all epochs together
MIN_EPOCHS, MAX_EPOCHS = 2, 10


def auto_epochs(class_sizes: Sequence[int], batch_size: int) -> Tuple[int, str]:
    """(epochs, why in a few words) for a training set with these examples per class.

    Args:
        class_sizes: training examples of each class (each >= 1).
        batch_size: examples per optimizer step.
    """
    examples = sum(class_sizes)
    steps_per_epoch = math.ceil(examples / batch_size)
    median_class = statistics.median(class_sizes)
    for_steps = math.ceil(TARGET_STEPS / steps_per_epoch)
    for_classes = math.ceil(TARGET_VISITS / median_class)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, for_steps, for_classes))
    why = (f"{TARGET_STEPS} steps take {for_steps} epochs of {steps_per_epoch}; seeing the median class "
           f"({median_class:g} examples, {len(class_sizes)} classes) {TARGET_VISITS} times takes {for_classes}; "
           f"bounds [{MIN_EPOCHS}, {MAX_EPOCHS}]")
    return epochs, why


def resolve_epochs(epochs: Union[int, str], labels: Sequence[Hashable], batch_size: int) -> Tuple[int, str]:
    """(`train.epochs` as a number, why): the number itself (why is ""), or for AUTO `auto_epochs` of the
    training examples' `labels`."""
    if epochs != AUTO:
        return epochs, ""
    return auto_epochs(list(Counter(labels).values()), batch_size)
