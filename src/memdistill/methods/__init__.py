"""Continual learners by name.  Each file holds one method; plug-ins sit beside them."""
from __future__ import annotations

from memdistill.methods.abd import AlwaysBeDreaming
from memdistill.methods.agem import AGEM
from memdistill.methods.base import Learner, LearnerContext
from memdistill.methods.clser import CLSER
from memdistill.methods.compress_recall import CompressRecall
from memdistill.methods.coreset import LwFCoreset, NaiveRehearsal
from memdistill.methods.ddn import PLUGINS
from memdistill.methods.deepinversion import DeepInversion
from memdistill.methods.derpp import DERpp
from memdistill.methods.dgr import DeepGenerativeReplay
from memdistill.methods.didd import DomainIncrementalDistillation
from memdistill.methods.er import ExperienceReplay
from memdistill.methods.er_ace import ERACE
from memdistill.methods.ewc import EWC
from memdistill.methods.finetune import Finetune
from memdistill.methods.joint import Joint
from memdistill.methods.lwf import LwF, LwFMultiClass
from memdistill.methods.plugin import Plugin
from memdistill.methods.replay import ReplayLearner

METHODS: dict[str, type[Learner]] = {
    "finetune": Finetune,
    "joint": Joint,
    "er": ExperienceReplay,
    "derpp": DERpp,
    "er-ace": ERACE,
    "clser": CLSER,
    "compress-recall": CompressRecall,
    # Remember the Past's other Table 3 baselines: a gradient constraint from memory, a weight penalty
    "agem": AGEM,
    "ewc": EWC,
    "didd": DomainIncrementalDistillation,   # domain-incremental synthetic set (issue 5 as a learner)
    # data-free (issue 6): no real data kept between tasks
    "lwf": LwF,
    "lwf-mc": LwFMultiClass,
    "deepinversion": DeepInversion,
    "abd": AlwaysBeDreaming,
    # ABD's generator baseline: a VAE kept instead of data (Table 1's DGR)
    "dgr": DeepGenerativeReplay,
    # ABD's baselines with a coreset of old images (Tables 1-2)
    "naive-rehearsal": NaiveRehearsal,
    "lwf-coreset": LwFCoreset,
}

# Plug-ins for replay methods (``ReplayLearner`` subclasses), built as
# ``PLUGINS[name](**plugin_args)`` and passed as ``plugins=[...]``.
__all__ = ["METHODS", "PLUGINS", "Learner", "LearnerContext", "Plugin", "ReplayLearner"]
