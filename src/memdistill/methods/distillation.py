"""What the data-free learners share: a frozen copy of the previous model, and
(for the synthetic-replay ones) a generator inverted from it.

At the end of task n-1 the network is copied and frozen (theta_{n-1}); methods
distil from it while they learn task n.  A learner with ``synthesises = True``
then trains an :class:`~memdistill.distill.inversion.ImageGenerator` against
theta_{n-1} (ABD Sec. 4, Eq. 7) and draws synthetic images of the old classes from
it during the next task, labelled by theta_{n-1}'s argmax over the old classes
(Eq. 3).  No real training data is kept across a task boundary.

As in the public ABD code: the SGD optimiser is re-created at the start of every
task; the generator and its Adam optimiser are kept and trained further after each
task (not re-initialised); no generator is trained after the last task (it would
never be used).  Unseen classes are masked out of predictions (class-IL over the
classes seen so far).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from memdistill.distill.inversion import ImageGenerator, SynthesisWeights, train_generator
from memdistill.methods.base import Learner

SYNTHESIS_OPTIONS = {"generator_steps": 5000, "generator_lr": 1e-3, "generator_width": 64,
                     "noise_dim": 1000, "synthetic_batch_size": 0, "alpha_con": 1.0, "alpha_div": 1.0,
                     "alpha_stat": 50.0, "alpha_prior": 1e-3, "alpha_temp": 1e3}


def check_options(name: str, opts: dict, positive=(), non_negative=(), integers=(), flags=()) -> None:
    """One-line errors for options of the wrong kind (they come from ``--method-arg``)."""
    for key in integers:
        if not isinstance(opts[key], int) or isinstance(opts[key], bool):
            raise ValueError(f"method {name}: option {key} must be an integer (got {opts[key]!r})")
    for key in positive:
        if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)) or opts[key] <= 0:
            raise ValueError(f"method {name}: option {key} must be a positive number (got {opts[key]!r})")
    for key in non_negative:
        if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)) or opts[key] < 0:
            raise ValueError(f"method {name}: option {key} must be a number >= 0 (got {opts[key]!r})")
    for key in flags:
        if not isinstance(opts[key], bool):
            raise ValueError(f"method {name}: option {key} must be true or false (got {opts[key]!r})")


def softened_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T, times T^2 (Hinton et al.), batch mean.

    The student's logits may cover more classes than the teacher's (the first
    ``teacher_logits.shape[1]`` columns are the teacher's): the teacher's
    distribution is then padded with zeros on the extra classes, which contribute
    nothing, while the student's softmax still runs over all its classes (ABD Eq. 9).
    """
    k = teacher_logits.shape[1]
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)[:, :k]
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1)
    return kl.mean() * temperature ** 2


class DistillationLearner(Learner):
    """A learner with a frozen previous model ``self.previous`` (None during the first task)."""

    synthesises = False

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        self.previous: torch.nn.Module | None = None
        self.old_classes: list[int] = []
        self.new_classes: list[int] = []
        self.synthesis_seconds: list[float] = []
        self.synthesis_skipped_steps: list[int] = []
        self.synthesis_class_counts: list[dict[int, int]] = []
        self.image_generator: ImageGenerator | None = None
        if self.synthesises:
            check_options(self.name, self.opts, positive=("generator_lr", "alpha_temp"),
                          non_negative=("generator_steps", "synthetic_batch_size", "alpha_con", "alpha_div",
                                        "alpha_stat", "alpha_prior"),
                          integers=("generator_steps", "generator_width", "noise_dim", "synthetic_batch_size"))
            if self.opts["generator_width"] < 1 or self.opts["noise_dim"] < 1:
                raise ValueError(f"method {self.name}: options generator_width and noise_dim must be >= 1")
            self.image_generator = ImageGenerator(ctx.input_shape, self.opts["noise_dim"],
                                                  self.opts["generator_width"]).to(self.device)
            self.image_generator.eval()
            self.generator_optimizer = torch.optim.Adam(self.image_generator.parameters(),
                                                        lr=self.opts["generator_lr"])

    # -- bookkeeping over tasks ---------------------------------------------------------
    def begin_task(self, task) -> None:
        self.old_classes = list(self.seen_classes)
        super().begin_task(task)
        self.new_classes = sorted(task.classes)
        self.optimizer = self.make_optimizer()

    def end_task(self, task) -> None:
        self.previous = self.frozen_copy()
        if self.synthesises and task.index < self.ctx.num_tasks - 1:
            result = self.train_image_generator()
            self.synthesis_seconds.append(result["synthesis_s"])
            self.synthesis_skipped_steps.append(result["skipped_steps"])
            self.synthesis_class_counts.append(self.synthetic_class_counts(task.index))

    def frozen_copy(self) -> torch.nn.Module:
        previous = copy.deepcopy(self.model)
        previous.requires_grad_(False)
        return previous.eval()

    def train_image_generator(self) -> dict[str, float]:
        """Eq. 7 against theta_{n-1} over the classes seen so far (see ``train_generator``)."""
        o = self.opts
        weights = SynthesisWeights(o["alpha_con"], o["alpha_div"], o["alpha_stat"], o["alpha_prior"],
                                   o["alpha_temp"])
        result = train_generator(self.image_generator, self.previous, list(self.seen_classes),
                                 o["generator_steps"], self.synthetic_batch_size, self.generator_optimizer,
                                 weights, noise=self.generator)
        return result

    @torch.no_grad()
    def synthetic_class_counts(self, task_index: int, n: int = 256) -> dict[int, int]:
        """How theta_{n-1} labels ``n`` fresh generator samples, per class seen so far.

        A collapsed generator shows as one class taking most samples (docs/benchmarks.md,
        ABD).  The noise comes from its own seeded generator, so recording this does not
        change the run's random stream."""
        x = self.image_generator.sample(n, torch.Generator().manual_seed(task_index), self.device)
        with self.autocast():
            logits = self.previous(x).float()
        seen = self.class_index(self.seen_classes)
        labels = seen[logits[:, seen].argmax(1)]
        return {int(c): int((labels == c).sum()) for c in self.seen_classes}

    @property
    def synthetic_batch_size(self) -> int:
        return self.opts.get("synthetic_batch_size") or self.ctx.batch_size

    # -- what subclasses use ----------------------------------------------------------------
    def class_index(self, classes: list[int]) -> torch.Tensor:
        return torch.tensor(classes, dtype=torch.long, device=self.device)

    def balancing_weights(self) -> torch.Tensor:
        """A weight per class that gives the old and the new classes the same total weight
        when old and new samples are mixed (ABD Eq. 14; the public code's DGR likewise):
        n_old / n_seen for old classes, 1 - that for new ones; all 1 in the first task."""
        w = torch.ones(self.ctx.num_classes, device=self.device)
        if self.old_classes:
            old_share = len(self.old_classes) / len(self.seen_classes)
            w[self.class_index(self.old_classes)] = old_share
            w[self.class_index(self.new_classes)] = 1.0 - old_share
        return w

    def seen_cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE over the classes seen so far (theta_{n,1:n})."""
        return F.cross_entropy(self.seen_mask(logits), labels)

    def plain_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """The first task's step (no previous model yet): CE over the seen classes."""
        loss = self.seen_cross_entropy(self.forward(x), labels)
        self.step(loss)
        return {"loss": loss.item()}

    def with_synthetic(self, x: torch.Tensor) -> torch.Tensor:
        """The real batch followed by a synthetic batch of the old classes."""
        return torch.cat([x, self.synthetic_batch(self.synthetic_batch_size)])

    @torch.no_grad()
    def synthetic_batch(self, n: int) -> torch.Tensor:
        """``n`` synthetic images of the old classes, in the network's input space."""
        x = self.image_generator.sample(n, self.generator, self.device)
        if self.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def previous_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta_{n-1}'s logits over the old classes and its penultimate features."""
        with self.autocast():
            feats = self.previous.features(x)
            logits = self.previous.head(feats)
        return logits.float()[:, self.class_index(self.old_classes)], feats.float()

    def pseudo_labels(self, old_logits: torch.Tensor) -> torch.Tensor:
        """Eq. 3: argmax of theta_{n-1} over the old classes, as class ids."""
        return self.class_index(self.old_classes)[old_logits.argmax(1)]

    # -- the seam ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        return self.seen_mask(super().predict(images, task_id))

    @property
    def memory_nbytes(self) -> int:
        """The generator (parameters and batch-norm statistics), kept between tasks.

        The frozen previous model is a copy of the network every distillation method
        keeps; like the paper, we do not count it as replay memory."""
        return self.image_generator.nbytes if self.image_generator is not None else 0

    @property
    def memory_detail(self) -> dict[str, int]:
        return {"generator": self.memory_nbytes} if self.image_generator is not None else {}

    def extra_summary(self) -> dict:
        if not self.synthesises:
            return {}
        return {"synthesis_s_per_task": [round(s, 3) for s in self.synthesis_seconds],
                "synthesis_s": round(sum(self.synthesis_seconds), 3),
                "synthesis_skipped_steps": sum(self.synthesis_skipped_steps),
                # per task boundary: how the frozen model labels 256 generator samples
                "synthesis_class_counts_per_task": [{str(c): k for c, k in counts.items()}
                                                    for counts in self.synthesis_class_counts],
                "generator_steps": self.opts["generator_steps"]}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(previous=None if self.previous is None else self.previous.state_dict(),
                     old_classes=list(self.old_classes), new_classes=list(self.new_classes),
                     synthesis_seconds=list(self.synthesis_seconds),
                     synthesis_skipped_steps=list(self.synthesis_skipped_steps),
                     synthesis_class_counts=[[[c, k] for c, k in counts.items()]
                                             for counts in self.synthesis_class_counts])
        if self.image_generator is not None:
            state.update(image_generator=self.image_generator.state_dict(),
                         generator_optimizer=self.generator_optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.previous = None
        if state["previous"] is not None:
            self.previous = self.frozen_copy()
            self.previous.load_state_dict(state["previous"])
        self.old_classes = list(state["old_classes"])
        self.new_classes = list(state["new_classes"])
        self.synthesis_seconds = [float(s) for s in state["synthesis_seconds"]]
        self.synthesis_skipped_steps = [int(s) for s in state.get("synthesis_skipped_steps", [])]
        self.synthesis_class_counts = [{int(c): int(k) for c, k in counts}
                                       for counts in state.get("synthesis_class_counts", [])]
        if self.image_generator is not None:
            self.image_generator.load_state_dict(state["image_generator"])
            self.generator_optimizer.load_state_dict(state["generator_optimizer"])
