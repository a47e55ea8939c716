"""The mean teacher: an exponential moving average (EMA) of the student's weights, updated after every iteration.

Why: when the student of one round becomes the teacher of the next, its own mistakes come back as labels and
grow (confirmation bias; issue 25 saw validation fall round after round). A teacher that is the EMA of the
student moves slowly and is never replaced by the student, so one bad stretch of training cannot relabel the
data (Tarvainen & Valpola 2017; Unbiased Teacher, Liu et al. 2021). The average is PyTorch's own
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``), BatchNorm buffers included.

configs/self_train_student.yaml attaches it to train.yaml's trainer; the loop (bundle/selftrain/loop.py) reads
``teacher.pt`` (final) and ``teacher_mid.pt`` (an earlier checkpoint, for temporal consistency) from its folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bundle.engines.checkpoints import network_weights

# decay "auto": the old teacher keeps this share of the average when the round ends, whatever its length
AUTO_RESIDUAL = 0.05
AUTO_RANGE = (0.9, 0.999)


def auto_decay(iterations: int, residual: float = AUTO_RESIDUAL) -> float:
    """The per-iteration decay at which the previous teacher keeps ``residual`` of the average after ``iterations``.

    Why: a fixed 0.999 is a long GPU run's value. A CPU-sized round of about 200 iterations leaves the old teacher
    0.999 ** 200 = 0.82 of the average, so the next round's teacher is the last one again (docs/selftraining.md saw
    round 1's EMA score as round 0's). Clipped to [0.9, 0.999]: never a copy of the student, never slower than 0.999.
    """
    if iterations < 1:
        raise ValueError(f"ema decay auto: {iterations} iterations; needs at least 1")
    lo, hi = AUTO_RANGE
    return float(min(hi, max(lo, residual ** (1.0 / iterations))))


def checked_decay(value: float | str, key: str) -> float | str:
    """'auto', or the decay as a float in (0, 1); anything else is refused naming ``key`` (a command line gives strings)."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        decay = float(value)
    except (TypeError, ValueError):
        decay = -1.0
    if not 0.0 < decay < 1.0:
        raise ValueError(f"{key} {value!r}: a number in (0, 1), or 'auto'")
    return decay


class TeacherEMA:
    """Ignite handler: EMA teacher of ``network`` (the student), saved as a bare state_dict like models/model.pt.

    decay: per iteration, or "auto" (``auto_decay`` of the training's epochs x iterations per epoch, read at start).
    init_ckpt: the previous round's teacher; the EMA starts from it (empty: from the student's first weights).
    mid_fraction: the share of the epochs after which ``teacher_mid.pt`` is saved (a second checkpoint).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str,
        decay: float | str = 0.999,
        init_ckpt: str = "",
        mid_fraction: float = 0.5,
    ) -> None:
        decay = checked_decay(decay, "ema decay")
        self.auto = decay == "auto"
        self.network = network
        self.decay = AUTO_RANGE[1] if self.auto else float(decay)
        self.init_ckpt = str(init_ckpt or "")
        self.save_dir = Path(save_dir)
        self.mid_fraction = float(mid_fraction)
        self.ema: AveragedModel | None = None
        self.updates = 0

    @property
    def final_path(self) -> Path:
        return self.save_dir / "teacher.pt"

    @property
    def mid_path(self) -> Path:
        return self.save_dir / "teacher_mid.pt"

    @property
    def running_path(self) -> Path:  # the EMA as of the last finished epoch: a resumed training continues from it
        return self.save_dir / "teacher_running.pt"

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_done)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def start(self, engine=None) -> None:
        """Build the average on the student's device; start from the saved running EMA, else the old teacher."""
        device = next(self.network.parameters()).device
        if self.auto and engine is not None and engine.state.epoch_length:  # a loader without a length keeps 0.999
            self.decay = auto_decay(int(engine.state.max_epochs) * int(engine.state.epoch_length))
            logging.getLogger(__name__).info(
                "teacher EMA decay auto: %.5f over %d iterations", self.decay, engine.state.max_epochs * engine.state.epoch_length
            )
        resumed = engine is not None and getattr(engine.state, "epoch", 0) > 0 and self.running_path.is_file()
        source = str(self.running_path) if resumed else self.init_ckpt
        # from a teacher: PyTorch's EMA as it is. From scratch (a burn-in round): the decay warms up as (1 + n) / (10 + n),
        # so the first random weights do not dominate a short run's average (TensorFlow's ExponentialMovingAverage rule)
        avg = get_ema_multi_avg_fn(self.decay) if source else _warm_ema(self.decay)
        self.ema = AveragedModel(self.network, multi_avg_fn=avg, use_buffers=True)
        if source:
            self.ema.module.load_state_dict(network_weights(source, map_location=device))
            self.ema.n_averaged.fill_(1)  # the first update averages into these weights instead of copying the student

    def update(self, engine=None) -> None:
        assert self.ema is not None, "TeacherEMA.update before start"
        self.ema.update_parameters(self.network)
        self.updates += 1

    def save(self, path: Path) -> None:
        assert self.ema is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}, tmp)
        tmp.replace(path)

    def epoch_done(self, engine) -> None:
        self.save(self.running_path)
        mid_epoch = max(1, round(self.mid_fraction * engine.state.max_epochs))
        if engine.state.epoch == mid_epoch:
            self.save(self.mid_path)

    def completed(self, engine=None) -> None:
        self.save(self.final_path)
        if not self.mid_path.is_file():  # a one-epoch run: the mid checkpoint is the final one
            self.save(self.mid_path)


def _warm_ema(decay: float):
    """EMA whose decay is min(decay, (1 + n) / (10 + n)) at the n-th update (torch's multi_avg_fn signature)."""

    @torch.no_grad()
    def update(ema_params: list, current_params: list, num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        get_ema_multi_avg_fn(d)(ema_params, current_params, num_averaged)

    return update
