"""Every method module, imported for its registrations (ernie_qat.train.hooks, ernie_qat.quant.quantizers).

Imported lazily by whoever needs the full tables (building a run's plugins, validating a config's
method names), so that importing a checkpoint or the contract does not import every method.
"""
from ernie_qat.distill import intervention, losses, teacher  # noqa: F401  (distillation, Teacher Intervention)
from ernie_qat.ptq import ocs, transform  # noqa: F401  (OCS structure; PTQ's fake-quant form)
from ernie_qat.quant import lowbit, observers, qat  # noqa: F401  (low-bit quantizers; QAT on PaddleSlim; its
#                                                    observers over the global batch under data parallelism)
from ernie_qat.regularizers import kurtosis  # noqa: F401  (kurtosis loss term)
from ernie_qat.optim import sam, squat  # noqa: F401  (SAM / ASAM, SQuAT optimizer steps)
from ernie_qat.models import taps  # noqa: F401  (training forward: outputs and interventions)
from ernie_qat.train import fast_ops  # noqa: F401  (compiled CPU kernels of the training step)
