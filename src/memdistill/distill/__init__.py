"""Dataset distillation: distilled memories, how they are learned, how they are measured.

* :mod:`memories` — memory objects (``SyntheticImages``, ``AddressableMemory``), the
  file format, the Eq. 4 budget helper;
* :mod:`bptt` — learning them by back-propagation through time with momentum (Alg. 1);
* :mod:`evaluate` — train fresh networks on a memory's recall, accuracy mean ± std;
* :mod:`augment` — flip + rotate drawn once for real and synthetic batches;
* :mod:`matching` — distribution matching (Gaussian MMD, mean embedding);
* :mod:`domain_incremental` / :mod:`domain_experiment` — one synthetic set across domains (DIDD);
* :mod:`inversion` — model inversion: a generator trained against a frozen model (ABD).
"""
from memdistill.distill.bptt import BPTTConfig, BPTTDistiller, MomentumUnroll
from memdistill.distill.evaluate import HeldOutImages, TrainSchedule, evaluate_dataset, evaluate_memory
from memdistill.distill.memories import (MEMORIES, AddressableBudget, AddressableMemory, DistilledMemory,
                                         MemoryFileError, SyntheticImages, addressable_budget, load_memory)

__all__ = ["AddressableBudget", "AddressableMemory", "BPTTConfig", "BPTTDistiller", "DistilledMemory",
           "MEMORIES", "MemoryFileError", "MomentumUnroll", "SyntheticImages", "HeldOutImages", "TrainSchedule",
           "addressable_budget", "evaluate_dataset", "evaluate_memory", "load_memory"]
