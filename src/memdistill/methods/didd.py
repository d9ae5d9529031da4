"""Domain-incremental dataset distillation as a continual learner (engine method ``didd``).

Wraps :class:`~memdistill.distill.domain_incremental.DomainIncrementalDistiller`
("Asymmetric Synthetic Data Update for Domain Incremental Dataset Distillation"):
one synthetic set of ``ipc`` x C images, the same size in every domain, is the
whole memory.

* While a task (domain) streams, the network is not trained; the stream's samples
  are collected (the current domain's data, which every method sees while it
  learns that domain) and dropped at the task's end.
* At the task's end the set is updated with that domain's data by the chosen
  strategy (default ``asymmetric``: per-sample stability/plasticity rates learned by
  the bi-level meta step, Key designs 1-4 of the paper; see ``domain_incremental.py``).
* Then a freshly initialised network is trained on the set
  (``train_fresh_network``, as compress-recall retrains) and answers ``predict``.

``memory_nbytes`` = the set (float32 pixels + int64 labels, ``SyntheticImages.nbytes``)
+ the rates ᾱ, β̄ (two float32 per image) for ``asymmetric``, which persist from one
domain to the next and so are memory too.  ``distill-gather`` (a new set per domain) is
allowed but grows with the domains; ``joint`` needs every domain at once and is not
a continual strategy, so it is refused here.

Applies to domain-incremental scenarios only (every task holds every class).

Options (``--method-arg KEY=VALUE``): ``strategy``, ``ipc``, ``iterations``,
``real_batch``, ``img_lr``, ``img_momentum``, ``distance``, ``augment``, ``alpha_min``,
``alpha_max``, ``beta_min``, ``beta_max``, ``meta_lr``, ``lambda_alpha``, ``lambda_beta``,
``reg_weight``, ``retrain_epochs``, ``retrain_lr``, ``retrain_batch``.
"""
from __future__ import annotations

import torch

from memdistill.data.scenarios import Task
from memdistill.distill.domain_incremental import STRATEGIES, DIDDConfig, DomainIncrementalDistiller, RealBatches
from memdistill.distill.evaluate import TrainSchedule, train_fresh_network
from memdistill.distill.memories import SyntheticImages
from memdistill.methods.base import Learner, LearnerContext
from memdistill.methods.compress_recall import fresh_network
from memdistill.nets import Backbone

CONTINUAL_STRATEGIES = tuple(s for s in STRATEGIES if s != "joint")


def didd_memory_bytes(ipc: int, num_classes: int, image_shape, strategy: str = "asymmetric") -> int:
    """Bytes the ``didd`` method keeps: ipc x C float32 images, their int64 labels and, for
    ``asymmetric``, the two float32 rates of each image (what ``memory_nbytes`` counts)."""
    c, h, w = image_shape
    per_image = 4 * c * h * w + 8 + (8 if strategy == "asymmetric" else 0)
    return ipc * num_classes * per_image


class DomainIncrementalDistillation(Learner):
    name = "didd"
    scenario_kinds = ("domain-incremental",)
    options = {"strategy": "asymmetric", "ipc": 1, "iterations": 200, "real_batch": 64, "img_lr": None,
               "img_momentum": 0.5, "distance": "mmd", "augment": "flip-rotate",
               "alpha_min": DIDDConfig.alpha_range[0], "alpha_max": DIDDConfig.alpha_range[1],
               "beta_min": DIDDConfig.beta_range[0], "beta_max": DIDDConfig.beta_range[1], "meta_lr": 0.05,
               "lambda_alpha": 0.01, "lambda_beta": 0.01, "reg_weight": 0.5, "retrain_epochs": 300,
               "retrain_lr": 0.01, "retrain_batch": 256}

    def __init__(self, model: Backbone, ctx: LearnerContext, **options):
        super().__init__(model, ctx, **options)
        o = self.opts
        if o["strategy"] not in CONTINUAL_STRATEGIES:
            raise ValueError(f"method didd: option strategy must be one of: {', '.join(CONTINUAL_STRATEGIES)} "
                             f"(got {o['strategy']!r})")
        for key in ("ipc", "iterations", "real_batch", "retrain_epochs", "retrain_batch"):
            if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
                raise ValueError(f"method didd: option {key} must be an integer >= 1 (got {o[key]!r})")
        for which in ("alpha", "beta"):
            if not o[f"{which}_min"] < o[f"{which}_max"]:
                raise ValueError(f"method didd: option {which}_min must be below {which}_max "
                                 f"(got {o[f'{which}_min']!r}, {o[f'{which}_max']!r})")
        self.cfg = DIDDConfig(strategy=o["strategy"], ipc=o["ipc"], iterations=o["iterations"],
                              real_batch=o["real_batch"], img_lr=o["img_lr"], img_momentum=o["img_momentum"],
                              distance=o["distance"], augment=o["augment"],
                              alpha_range=(o["alpha_min"], o["alpha_max"]),
                              beta_range=(o["beta_min"], o["beta_max"]), meta_lr=o["meta_lr"],
                              lambda_alpha=o["lambda_alpha"], lambda_beta=o["lambda_beta"],
                              reg_weight=o["reg_weight"], seed=ctx.seed)
        self.distiller = DomainIncrementalDistiller(self.cfg, lambda: fresh_network(self.model), ctx.num_classes,
                                                    ctx.mean, ctx.std, ctx.device)
        self.seen_images: list[torch.Tensor] = []
        self.seen_labels: list[torch.Tensor] = []
        self.distill_seconds: list[float] = []

    # -- the seam -------------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.seen_images, self.seen_labels = [], []

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        # No network training while the domain streams: keep its samples for distillation.
        self.seen_images.append(images.detach())
        self.seen_labels.append(labels.detach())
        return {}

    def end_task(self, task: Task) -> None:
        if not self.seen_labels:
            return
        images, labels = torch.cat(self.seen_images), torch.cat(self.seen_labels)
        self.seen_images, self.seen_labels = [], []
        real = RealBatches(images, labels, self.ctx.num_classes, self.ctx.mean, self.ctx.std, self.device)
        if not self.distiller.sets and self.cfg.strategy != "distill-gather":
            self.distiller.sets.append(self._initial_set(real))
        log = self.distiller.learn_domain(real)
        self.distill_seconds.append(log.seconds)
        self._retrain(task.index)

    def _initial_set(self, real: RealBatches) -> SyntheticImages:
        """``ipc`` real images per class of the first domain (as ``RealBatches.init_set``); a class
        with fewer images repeats them with a little noise, so the set has its planned size
        whatever the stream's size.  A class absent from the first domain starts as noise."""
        g = self.distiller.generator
        shape = (self.cfg.ipc, *self.ctx.input_shape)
        xs, ys = [], []
        for c in range(self.ctx.num_classes):
            idx = real.by_class.get(c)
            if idx is None:
                x = torch.randn(shape, generator=g).to(self.device)
            else:
                order = idx[torch.randperm(len(idx), generator=g).to(idx.device)]
                x = real.images[order[torch.arange(self.cfg.ipc, device=order.device) % len(order)]].clone()
                if len(order) < self.cfg.ipc:
                    x[len(order):] += 0.05 * torch.randn(x[len(order):].shape, generator=g).to(x.device)
            xs.append(x)
            ys.append(torch.full((self.cfg.ipc,), c, dtype=torch.long))
        return SyntheticImages(torch.cat(xs), torch.cat(ys), self.ctx.num_classes, self.ctx.mean,
                               self.ctx.std).to(self.device)

    def _retrain(self, task_index: int) -> None:
        with torch.no_grad():
            images, labels = self.distiller.memory.dataset()
        o = self.opts
        schedule = TrainSchedule(epochs=int(o["retrain_epochs"]), lr=float(o["retrain_lr"]),
                                 batch_size=int(o["retrain_batch"]))
        net = train_fresh_network(images, labels, lambda: fresh_network(self.model), schedule,
                                  seed=self.ctx.seed * 1_000 + 500 + task_index)
        self.model.load_state_dict(net.state_dict())

    # -- bookkeeping ------------------------------------------------------------------
    @property
    def memory_detail(self) -> dict[str, int]:
        if not self.distiller.sets:
            return {}
        memory = self.distiller.memory
        detail = {"synthetic_images": memory.images.numel() * memory.images.element_size(),
                  "labels": memory.labels.numel() * memory.labels.element_size()}
        if self.distiller.rates is not None:
            detail["update_rates"] = sum(p.numel() * p.element_size() for p in self.distiller.rates.parameters())
        return detail

    @property
    def memory_nbytes(self) -> int:
        return sum(self.memory_detail.values())

    def extra_summary(self) -> dict:
        return {"distill_s_per_task": [round(s, 3) for s in self.distill_seconds],
                "didd_strategy": self.cfg.strategy, "ipc": self.cfg.ipc}

    def state_dict(self) -> dict:
        d = self.distiller
        state = super().state_dict()
        state["didd"] = {
            "sets": [{"images": s.images.detach().clone(), "labels": s.labels.clone()} for s in d.sets],
            "previous": d.previous, "importance": d.importance,
            "rates": None if d.rates is None else d.rates.state_dict(),
            "rate_optimizer": None if d.rate_optimizer is None else d.rate_optimizer.state_dict(),
            "generator": d.generator.get_state(), "domains_seen": d.domains_seen, "draws": d._draws,
            "distill_seconds": list(self.distill_seconds)}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        s, d = state["didd"], self.distiller
        d.sets = [SyntheticImages(x["images"], x["labels"], self.ctx.num_classes, self.ctx.mean, self.ctx.std)
                  .to(self.device) for x in s["sets"]]
        d.previous, d.importance = s["previous"], s["importance"]
        if s["rates"] is not None:
            from memdistill.distill.domain_incremental import UpdateRates
            n = len(s["rates"]["alpha"])
            d.rates = UpdateRates(n, self.cfg.alpha_range, self.cfg.beta_range).to(self.device)
            d.rates.load_state_dict(s["rates"])
            opt = torch.optim.Adam if self.cfg.meta_optimizer == "adam" else torch.optim.SGD
            d.rate_optimizer = opt(d.rates.parameters(), lr=self.cfg.meta_lr)
            d.rate_optimizer.load_state_dict(s["rate_optimizer"])
        d.generator.set_state(s["generator"])
        d.domains_seen, d._draws = int(s["domains_seen"]), int(s["draws"])
        self.distill_seconds = [float(v) for v in s["distill_seconds"]]
