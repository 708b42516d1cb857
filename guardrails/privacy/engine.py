"""The DP-SGD loop both trainers share: Opacus setup, Poisson batches, accounting.

`fit` validates (and if needed fixes) the module with ``ModuleValidator``, makes it private
with ``PrivacyEngine.make_private_with_epsilon`` (Poisson sampling; noise calibrated so the
accountant's ε after ``epochs`` is at most the target), runs the logical batches through
``BatchMemoryManager`` in physical chunks, and returns what the privacy report needs. With
``dp=False`` it runs the same loop (same shuffling rule, same optimizer, no clipping or
noise), so a private and a non-private model differ only by DP-SGD.

Clipping: ``"ghost"`` is Opacus' ghost clipping (per-sample gradient *norms* from
activations and backprops, then a second backward; no per-sample gradients kept), used for
every layer with a norm sampler; ``"standard"`` materialises per-sample gradients.
Opacus ships no norm sampler for ``nn.EmbeddingBag``, so this module registers one (exact,
see `embedding_bag_norm_sample`); its grad sampler materialises [B, rows, dim], which is
why the byte n-gram classifier uses ghost clipping.

Randomness: every private run draws its Poisson sampling and its noise from fresh OS entropy
that is never recorded (`random_source`): Opacus' ``secure_mode`` (torchcsprng) when it is
importable, else ``torch.Generator``s seeded from ``os.urandom``. A fixed seed is only used
when asked for by name (``fixed_seed=``), and such a run is reported as not private.

Accounting: σ is calibrated with RDP or PRV only (GDP can under-state ε and is refused); the
spent ε is then computed by both accountants from (σ, q, steps) (`spent_epsilons`) and the
smaller, both being valid upper bounds, is the headline. δ must be below 1/n here, where the
accounting happens, not only in the CLI. Importing this module imports torch and opacus.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from guardrails.privacy.data import check_delta
from guardrails.privacy.errors import PrivacyError, TrainingDivergedError

# (step, total_steps, loss, epsilon so far or None)
StepProgress = Callable[[int, int, float, float | None], None]

CLIPPING_MODES = {"ghost": "ghost", "standard": "hooks"}
# GDP is left out on purpose: Opacus warns that it can under-state ε (at target ε 3 it chose
# a σ whose ε is 3.73 by PRV and 4.38 by RDP).
ACCOUNTANTS = ("rdp", "prv")


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def _sgd(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


# Adam rescales every coordinate to a step of about ``lr``, so under DP noise the rows of an
# embedding table that a batch barely touches still move by ``lr`` in a random direction;
# SGD moves them by the (small) noise itself. Hence "sgd" for tables, "adam" for adapters.
OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float], torch.optim.Optimizer]] = {
    "adam": _adam,
    "sgd": _sgd,
}


def _quiet_accountant() -> None:
    # RDP warns when its best Rényi order is the largest on its grid: the ε it reports is
    # then a valid upper bound that a finer grid could tighten, so the report stays safe.
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")


def _no_progress(_step: int, _total: int, _loss: float, _eps: float | None) -> None:
    pass


def default_lr(optimizer: str, batch_size: int) -> float:
    """The default learning rate for ``optimizer`` at an expected batch of ``batch_size``.

    SGD follows the linear scaling rule (lr ∝ batch, Goyal et al. 2017) from a measured
    anchor, capped: the noisy mean gradient's noise shrinks as 1/batch, so small batches need
    small steps (the old fixed 8.0 diverged at batch 64). The anchor, lr 1.0 at batch 1024,
    is the best of 1.0 and 2.0 for the MiniLM head at ε 8 (bench/bench_privacy.py, F1 0.50
    against 0.31); the tests train the fast model at batches 16 and 512 with it. Adam
    normalises its steps, so its rate stays fixed.
    """
    if optimizer == "sgd":
        return min(4.0, batch_size / 1024)
    return 2e-3


@dataclass(frozen=True, slots=True)
class DPSettings:
    """How to train; ``dp=False`` ignores the privacy fields and trains without noise.

    ``delta`` None means `guardrails.privacy.data.default_delta` of the record count; any δ
    is checked against 1/n when training starts. ``lr`` None means `default_lr`.
    ``fixed_seed`` makes the run replayable and therefore NOT private (tests only).
    ``secure_mode`` None uses Opacus' secure mode when torchcsprng is importable; True
    requires it; False never uses it.
    """

    dp: bool = True
    target_epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    epochs: int = 3
    batch_size: int = 256
    max_physical_batch_size: int = 64
    lr: float | None = None
    accountant: str = "rdp"
    clipping: str = "ghost"
    optimizer: str = "adam"
    fixed_seed: int | None = None
    secure_mode: bool | None = None

    @property
    def learning_rate(self) -> float:
        """``lr``, or `default_lr` for this optimizer and batch size."""
        return self.lr if self.lr is not None else default_lr(self.optimizer, self.batch_size)

    def check(self) -> None:
        """Raise `PrivacyError` for settings Opacus would reject later, less clearly."""
        if self.clipping not in CLIPPING_MODES:
            raise PrivacyError(
                f"clipping must be one of {sorted(CLIPPING_MODES)}, got {self.clipping!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise PrivacyError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.accountant not in ACCOUNTANTS:
            why = " (GDP can under-state ε, so σ is never calibrated with it)"
            raise PrivacyError(
                f"accountant must be one of {list(ACCOUNTANTS)}, got {self.accountant!r}"
                + (why if self.accountant == "gdp" else "")
            )
        if self.dp and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise PrivacyError(f"epsilon must be a positive number, got {self.target_epsilon}")
        if self.max_grad_norm <= 0:
            raise PrivacyError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.epochs < 1 or self.batch_size < 1 or self.max_physical_batch_size < 1:
            raise PrivacyError("epochs, batch size and physical batch size must be at least 1")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PrivacyError(f"lr must be a positive number, got {self.lr}")
        if self.fixed_seed is not None and (
            isinstance(self.fixed_seed, bool) or not isinstance(self.fixed_seed, int)
        ):
            raise PrivacyError(f"fixed_seed must be an int or None, got {self.fixed_seed!r}")


def csprng_available() -> bool:
    """Whether torchcsprng (what Opacus' ``secure_mode`` needs) can be imported."""
    import importlib.util

    return importlib.util.find_spec("torchcsprng") is not None


@dataclass(frozen=True, slots=True)
class RandomSource:
    """Where a run's sampling and noise come from; the generators are never recorded."""

    description: str
    private: bool
    secure_mode: bool
    sampling: torch.Generator | None
    noise: torch.Generator | None


def _entropy_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(63))


def random_source(settings: DPSettings) -> RandomSource:
    """Seed torch (model init, dropout) and make the sampling and noise generators.

    Without ``fixed_seed`` every call draws fresh OS entropy, so two runs with the same
    arguments differ; the seeds are not kept anywhere.

    Raises:
        PrivacyError: ``secure_mode=True`` without torchcsprng.
    """
    if settings.fixed_seed is not None:
        seed = settings.fixed_seed
        torch.manual_seed(seed)
        return RandomSource(
            f"fixed seed {seed}: NOT PRIVATE (batches and noise can be replayed)",
            private=False,
            secure_mode=False,
            sampling=torch.Generator().manual_seed(seed),
            noise=torch.Generator().manual_seed(seed + 1),
        )
    torch.manual_seed(secrets.randbits(63))
    secure = csprng_available() if settings.secure_mode is None else settings.secure_mode
    if secure:
        if not csprng_available():
            raise PrivacyError(
                "secure_mode needs torchcsprng (pip install torchcsprng); "
                "without it the run uses OS-entropy-seeded torch generators"
            )
        return RandomSource(
            "torchcsprng /dev/urandom (Opacus secure_mode)",
            private=True,
            secure_mode=True,
            sampling=None,
            noise=None,
        )
    return RandomSource(
        "torch.Generator seeded from os.urandom, seeds not recorded "
        "(Opacus secure_mode off: torchcsprng not installed)",
        private=True,
        secure_mode=False,
        sampling=_entropy_generator(),
        noise=_entropy_generator(),
    )


def spent_epsilons(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> dict[str, float | None]:
    """ε after ``steps`` Poisson-sampled steps at (σ, q), by RDP and by PRV, at ``delta``.

    Each is a valid upper bound; PRV is None where Opacus cannot compute it.
    """
    from opacus.accountants import PRVAccountant, RDPAccountant

    out: dict[str, float | None] = {}
    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        acc: Any = cls()
        acc.history = [(noise_multiplier, sample_rate, steps)]
        try:
            with warnings.catch_warnings():
                _quiet_accountant()
                # PRV's numerics warn (log of 0, overflow) where it cannot bound the loss,
                # e.g. at sampling rate 1; such a result is dropped below, not reported.
                warnings.simplefilter("ignore", RuntimeWarning)
                eps = float(acc.get_epsilon(delta))
        except (ValueError, RuntimeError, OverflowError, FloatingPointError):
            eps = math.nan
        out[name] = eps if math.isfinite(eps) and eps >= 0 else None
    return out


@dataclass(frozen=True, slots=True)
class FitResult:
    """What the loop did, for the privacy report (no statistic of the private data).

    ``epsilon`` is the smaller of ``epsilons`` (RDP and PRV, both valid upper bounds) and
    ``epsilon_accountant`` names it; ``rng`` says where sampling and noise came from, and
    ``private`` is False for a non-DP or a fixed-seed run.
    """

    epsilon: float | None
    epsilon_accountant: str | None
    epsilons: dict[str, float | None]
    delta: float | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    seconds: float
    loop_seconds: float
    fixes: tuple[str, ...]
    rng: str
    private: bool
    secure_mode: bool
    lr: float


class PerExampleLoss(nn.Module):
    """A loss with a settable ``reduction``, as Opacus' ghost-clipping wrapper needs.

    ``per_example(output, target)`` returns one loss per record, shape [B]; the wrapper sets
    ``reduction="none"`` to get them, the standard path uses ``"mean"``.
    """

    def __init__(self, per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.per_example = per_example
        self.reduction = "mean"

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = self.per_example(output, target)
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.mean() if losses.numel() else losses.sum()


def embedding_bag_norm_sample(
    layer: nn.EmbeddingBag, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Exact per-sample gradient norms of an ``EmbeddingBag`` (mode sum or mean), no [B, rows, dim].

    Bag i's gradient puts ``w_i · c_ir · g_i`` on each row r it touches ``c_ir`` times
    (``w_i`` = 1/len_i for mean, 1 for sum; ``g_i`` its backprop), so its norm is
    ``w_i · ‖g_i‖ · sqrt(Σ_r c_ir²)``.
    """
    index, offsets = activations[0], activations[1]
    b = backprops.shape[0]
    if b == 0:
        return {layer.weight: backprops.new_zeros(0)}  # type: ignore[dict-item]
    lengths = torch.diff(offsets, append=torch.tensor([index.numel()], device=offsets.device))
    bag = torch.repeat_interleave(torch.arange(b, device=index.device), lengths)
    _, counts = torch.unique(bag * layer.num_embeddings + index, return_counts=True)
    bag_of_key = torch.unique(bag * layer.num_embeddings + index) // layer.num_embeddings
    sq = torch.zeros(b, dtype=backprops.dtype, device=backprops.device)
    sq.index_add_(0, bag_of_key, counts.to(backprops.dtype) ** 2)
    weight = 1.0 / lengths.clamp(min=1).to(backprops.dtype) if layer.mode == "mean" else 1.0
    norms = weight * backprops.norm(dim=1) * sq.sqrt()
    return {layer.weight: norms}  # type: ignore[dict-item]


def _register_samplers() -> None:
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.grad_sample.utils import register_norm_sampler

    if nn.EmbeddingBag not in GradSampleModuleFastGradientClipping.NORM_SAMPLERS:
        register_norm_sampler(nn.EmbeddingBag)(embedding_bag_norm_sample)


def validate_module(module: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
    """``ModuleValidator``: the module if Opacus accepts it, else the fixed one and what changed.

    Raises:
        PrivacyError: the module cannot be made DP-compatible.
    """
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(module, strict=False)
    if not errors:
        return module, ()
    fixed = ModuleValidator.fix(module)
    left = ModuleValidator.validate(fixed, strict=False)
    if left:
        raise PrivacyError(f"model cannot be trained with DP-SGD: {'; '.join(map(str, left))}")
    return fixed, tuple(str(e) for e in errors)


def fit(
    module: nn.Module,
    dataset: Dataset[Any],
    per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: DPSettings,
    *,
    collate: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: StepProgress = _no_progress,
    epsilon_every: int = 10,
    rng: RandomSource | None = None,
) -> tuple[nn.Module, FitResult]:
    """Train ``module``'s trainable parameters on ``dataset`` (items ``(input, target)``).

    Returns the trained module (unwrapped from Opacus) and the accounting. The input of a
    batch goes to ``module(input)``; ``per_example(output, target)`` gives [B] losses.
    ``rng`` is the run's `random_source` when the caller already drew it (to seed the
    model's initialisation from it); otherwise it is drawn here.

    Raises:
        PrivacyError: bad settings, a δ not below 1/n, or no noise level reaches the target ε.
        TrainingDivergedError: a trained parameter is not finite.
    """
    settings.check()
    started = time.perf_counter()
    n = len(dataset)  # type: ignore[arg-type]
    delta = check_delta(settings.delta, n) if settings.dp else None
    source = rng if rng is not None else random_source(settings)
    lr = settings.learning_rate
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=not settings.dp,
        collate_fn=collate,
        generator=source.sampling if source.sampling is not None else _entropy_generator(),
    )
    params = [p for p in module.parameters() if p.requires_grad]
    criterion = PerExampleLoss(per_example)
    fixes: tuple[str, ...] = ()
    engine: Any = None
    if settings.dp:
        assert delta is not None
        from opacus import PrivacyEngine

        _register_samplers()
        module, fixes = validate_module(module)
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer = OPTIMIZERS[settings.optimizer](params, lr)
        with warnings.catch_warnings():
            # Opacus warns when secure_mode is off; the report's ``rng`` field says so.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=settings.accountant, secure_mode=source.secure_mode)
        mode = CLIPPING_MODES[settings.clipping]
        try:
            with warnings.catch_warnings():
                _quiet_accountant()
                made = engine.make_private_with_epsilon(
                    module=module,
                    optimizer=optimizer,
                    criterion=criterion,
                    data_loader=loader,
                    target_epsilon=settings.target_epsilon,
                    target_delta=delta,
                    epochs=settings.epochs,
                    max_grad_norm=settings.max_grad_norm,
                    poisson_sampling=True,
                    grad_sample_mode=mode,
                    noise_generator=source.noise,
                )
        except ValueError as exc:
            raise PrivacyError(f"cannot reach epsilon={settings.target_epsilon}: {exc}") from exc
        if mode == "ghost":
            module, optimizer, criterion, loader = made
        else:
            module, optimizer, loader = made
        sample_rate = float(loader.sample_rate)
    else:
        optimizer = OPTIMIZERS[settings.optimizer](params, lr)
        sample_rate = min(1.0, settings.batch_size / n)
    total = len(loader) * settings.epochs
    module.train()
    with warnings.catch_warnings():
        # Ghost clipping backpropagates to module outputs whose inputs (token ids) need no
        # gradient; torch warns that the full backward hook fires anyway, which is what
        # Opacus relies on.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        _quiet_accountant()
        loop_started = time.perf_counter()
        step = _loop(
            module,
            optimizer,
            criterion,
            loader,
            engine,
            settings,
            progress,
            epsilon_every,
            total,
            delta,
        )
        loop_seconds = time.perf_counter() - loop_started
    noise: float | None = None
    epsilons: dict[str, float | None] = {}
    eps: float | None = None
    eps_by: str | None = None
    if engine is not None:
        assert delta is not None
        noise = float(optimizer.noise_multiplier)  # type: ignore[attr-defined]
        epsilons = spent_epsilons(noise, sample_rate, step, delta)
        valid = {k: v for k, v in epsilons.items() if v is not None}
        eps_by = min(valid, key=lambda k: valid[k])
        eps = valid[eps_by]
        wrapper: Any = module
        wrapper.cleanup()  # removes the hooks and the attributes Opacus put on parameters
        module = wrapper._module  # the original module, trained in place
    module.train(False)
    bad = [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingDivergedError(
            f"training diverged: {len(bad)} parameter(s) not finite ({', '.join(bad[:3])}); "
            f"lower --lr (was {lr:g})"
        )
    return module, FitResult(
        epsilon=eps,
        epsilon_accountant=eps_by,
        epsilons=epsilons,
        delta=delta,
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps=step,
        seconds=time.perf_counter() - started,
        loop_seconds=loop_seconds,
        fixes=fixes,
        rng=source.description if settings.dp else "not private (no noise)",
        private=settings.dp and source.private,
        secure_mode=source.secure_mode,
        lr=lr,
    )


def _loop(
    module: nn.Module,
    optimizer: Any,
    criterion: Any,
    loader: Any,
    engine: Any,
    settings: DPSettings,
    progress: StepProgress,
    epsilon_every: int,
    total: int,
    delta: float | None,
) -> int:
    step = 0
    eps: float | None = None
    spent = (
        _EpsilonSoFar(optimizer, loader, delta)
        if engine is not None and delta is not None
        else None
    )
    for _epoch in range(settings.epochs):
        for x, y in _batches(loader, optimizer, settings):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(module(x), y)
            loss.backward()
            optimizer.step()
            # With BatchMemoryManager, DPOptimizer skips (accumulates) until the last
            # physical chunk of a logical batch; only then has a step been taken.
            if getattr(optimizer, "_is_last_step_skipped", False):
                continue
            step += 1
            if spent is not None and (step % epsilon_every == 0 or step == total):
                eps = spent.at(step)
            # the loss goes to the operator's progress bar only, never into the report
            progress(step, total, float(loss.item()), eps)
    return step


class _EpsilonSoFar:
    """ε (RDP) after ``k`` steps for the progress bar, cheaply.

    With a fixed (σ, q) the Rényi divergence adds up over steps, so one step's curve is
    computed once and scaled; Opacus' ``get_epsilon`` recomputes it on every call (about
    0.4 s here, as long as several training steps). The report's ε is `spent_epsilons`.
    """

    def __init__(self, optimizer: Any, loader: Any, delta: float) -> None:
        from opacus.accountants.analysis import rdp
        from opacus.accountants.rdp import RDPAccountant

        self.delta = delta
        self.orders: list[float] = list(RDPAccountant.DEFAULT_ALPHAS)
        self.per_step: Any = rdp.compute_rdp(
            q=float(loader.sample_rate),
            noise_multiplier=float(optimizer.noise_multiplier),
            steps=1,
            orders=self.orders,
        )

    def at(self, step: int) -> float:
        """ε spent after ``step`` steps."""
        from opacus.accountants.analysis import rdp

        eps, _ = rdp.get_privacy_spent(
            orders=self.orders, rdp=self.per_step * step, delta=self.delta
        )
        return float(eps)


def _batches(loader: Any, optimizer: Any, settings: DPSettings) -> Any:
    """Physical batches: through ``BatchMemoryManager`` when private, else the loader's."""
    if not settings.dp:
        yield from loader
        return
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    with BatchMemoryManager(
        data_loader=loader,
        max_physical_batch_size=settings.max_physical_batch_size,
        optimizer=optimizer,
    ) as chunks:
        yield from chunks


__all__ = [
    "ACCOUNTANTS",
    "CLIPPING_MODES",
    "OPTIMIZERS",
    "DPSettings",
    "FitResult",
    "PerExampleLoss",
    "RandomSource",
    "StepProgress",
    "csprng_available",
    "default_lr",
    "embedding_bag_norm_sample",
    "fit",
    "random_source",
    "spent_epsilons",
    "validate_module",
]
