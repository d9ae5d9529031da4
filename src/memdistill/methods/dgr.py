"""Deep Generative Replay (Shin, Lee, Kim & Kim, NeurIPS 2017): ABD's generator baseline.

ABD's Table 1 row "DGR" stores a generative model instead of data.  As in the public
ABD code's baseline (``learners/dgr.py``), generator and classifier (the paper's
"scholar") learn side by side on every batch:

* from the second task on, each real batch is joined by an equally large batch
  decoded from the VAE of the previous task (a frozen copy), labelled by the
  previous classifier's argmax over the old classes;
* the classifier minimises the cross-entropy over the seen classes on real +
  replayed samples, each weighted by its class group so that old and new classes
  weigh the same (n_old / n_seen for old classes, 1 - that for new ones; the public
  code's weights, ``balance=false`` turns them off), plus ``kd_weight`` (1, the
  public script's ``--mu 1``) times a distillation term on the replayed samples: the
  cross-entropy between the previous classifier's and the current one's softmax over
  the old classes at temperature 2 (the public ``loss_fn_kd``, without a T^2 factor);
* the VAE (:class:`~memdistill.nets.vae.ReplayVAE`) minimises its reconstruction
  loss, with the same weights, plus its KL term on the same real + replayed batch
  (in pixel space: the network's input un-normalised to [0, 1]), so it learns the
  new task while it rehearses its own old samples.

The VAE's optimiser is re-created at each task, as the classifier's is.  The public
code gives it the classifier's settings (SGD lr 0.1, momentum 0.9, and weight decay
0 for both in its DGR script): ``vae_optimizer=sgd`` does the same, with the run's
lr, momentum and weight decay.  The default is ours, Adam at ``vae_lr`` 1e-3: on
seq-digits the SGD-trained VAE's replay kept less (docs/benchmarks.md).  The memory is the VAE (its float32 parameters); as for the other
distillation methods the frozen previous classifier is not counted, nor the VAE's
own frozen copy, which is the same memory taken at the task boundary.  No real
training data is kept across a task boundary.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from memdistill.methods.distillation import DistillationLearner, check_options
from memdistill.nets.vae import ReplayVAE


class DeepGenerativeReplay(DistillationLearner):
    name = "dgr"
    options = {"vae_width": 64, "vae_z": 1024, "vae_optimizer": "adam", "vae_lr": 1e-3, "balance": True,
               "kd_weight": 1.0, "temperature": 2.0}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        check_options(self.name, self.opts, positive=("vae_width", "vae_z", "vae_lr", "temperature"),
                      non_negative=("kd_weight",), integers=("vae_width", "vae_z"), flags=("balance",))
        if self.opts["vae_optimizer"] not in ("adam", "sgd"):
            raise ValueError(f"method dgr: option vae_optimizer must be adam or sgd "
                             f"(got {self.opts['vae_optimizer']!r})")
        self.vae = ReplayVAE(ctx.input_shape, self.opts["vae_width"], self.opts["vae_z"]).to(self.device)
        self.vae_optimizer = self.make_vae_optimizer()
        self.previous_vae: ReplayVAE | None = None

    def make_vae_optimizer(self) -> torch.optim.Optimizer:
        if self.opts["vae_optimizer"] == "sgd":              # the public code: the classifier's settings
            return torch.optim.SGD(self.vae.parameters(), lr=self.ctx.lr, momentum=self.ctx.momentum,
                                   weight_decay=self.ctx.weight_decay)
        return torch.optim.Adam(self.vae.parameters(), lr=self.opts["vae_lr"])

    # -- task boundaries ----------------------------------------------------------------------
    def begin_task(self, task) -> None:
        super().begin_task(task)                  # re-creates the classifier's optimiser
        self.vae_optimizer = self.make_vae_optimizer()

    def end_task(self, task) -> None:
        super().end_task(task)                    # the frozen previous classifier
        self.previous_vae = copy.deepcopy(self.vae).requires_grad_(False).eval()

    # -- pixels <-> the network's input ----------------------------------------------------------
    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The network's (normalised) input back to [0, 1]."""
        p = self.preprocess
        return ((x - p.shift) / (p.scale * 255.0)).clamp(0.0, 1.0)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels * (self.preprocess.scale * 255.0) + self.preprocess.shift
        return x.contiguous(memory_format=torch.channels_last) if self.ctx.channels_last else x

    @torch.no_grad()
    def replay_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` samples of the previous VAE, in the network's input space, with the previous
        classifier's logits over the old classes and its labels (their argmax)."""
        x = self.from_pixels(self.previous_vae.sample(n, self.generator, self.device))
        previous_logits, _ = self.previous_forward(x)
        return x, self.pseudo_labels(previous_logits), previous_logits

    def replay_distillation(self, logits: torch.Tensor, previous_logits: torch.Tensor) -> torch.Tensor:
        """Soft-target CE over the old classes at temperature T, batch mean (no T^2)."""
        T = self.opts["temperature"]
        log_p = F.log_softmax(logits[:, self.class_index(self.old_classes)] / T, dim=1)
        return -(F.softmax(previous_logits / T, dim=1) * log_p).sum(1).mean()

    # -- one step -------------------------------------------------------------------------------
    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        x, y = self.preprocess(images, self.generator), labels
        n = len(x)
        if self.previous_vae is not None:
            x_replay, y_replay, previous_logits = self.replay_batch(n)
            x, y = torch.cat([x, x_replay]), torch.cat([y, y_replay])
        weights = (self.balancing_weights() if self.opts["balance"]
                   else torch.ones(self.ctx.num_classes, device=self.device))[y]
        logits = self.forward(x)
        ce = (F.cross_entropy(self.seen_mask(logits), y, reduction="none") * weights).mean()
        kd = self.replay_distillation(logits[n:], previous_logits) if self.previous_vae is not None \
            else torch.zeros((), device=self.device)
        loss = ce + self.opts["kd_weight"] * kd
        self.step(loss)

        recon, kl = self.vae.loss(self.to_pixels(x.detach()).contiguous(), weights, self.generator)
        self.vae_optimizer.zero_grad(set_to_none=True)
        (recon + kl).backward()
        self.vae_optimizer.step()
        return {"loss": loss.item(), "ce": ce.item(), "kd": kd.item(), "vae_recon": recon.item(),
                "vae_kl": kl.item()}

    # -- memory and checkpoints -----------------------------------------------------------------
    @property
    def memory_nbytes(self) -> int:
        """The VAE, kept between tasks (float32 parameters)."""
        return self.vae.nbytes

    @property
    def memory_detail(self) -> dict[str, int]:
        return {"generator": self.vae.nbytes}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "vae": self.vae.state_dict(),
                "vae_optimizer": self.vae_optimizer.state_dict(),
                "previous_vae": None if self.previous_vae is None else self.previous_vae.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.vae.load_state_dict(state["vae"])
        self.vae_optimizer.load_state_dict(state["vae_optimizer"])
        self.previous_vae = None
        if state["previous_vae"] is not None:
            self.previous_vae = copy.deepcopy(self.vae).requires_grad_(False).eval()
            self.previous_vae.load_state_dict(state["previous_vae"])
