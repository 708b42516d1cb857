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
why the classifier defaults to ghost clipping. Importing this module imports torch and opacus.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from guardrails.privacy.errors import PrivacyError

# (step, total_steps, loss, epsilon so far or None)
StepProgress = Callable[[int, int, float, float | None], None]

CLIPPING_MODES = {"ghost": "ghost", "standard": "hooks"}
ACCOUNTANTS = ("rdp", "prv", "gdp")


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


@dataclass(frozen=True, slots=True)
class DPSettings:
    """How to train; ``dp=False`` ignores the privacy fields and trains without noise."""

    dp: bool = True
    target_epsilon: float = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    epochs: int = 3
    batch_size: int = 256
    max_physical_batch_size: int = 64
    lr: float = 5e-3
    accountant: str = "rdp"
    clipping: str = "ghost"
    optimizer: str = "adam"
    seed: int = 13

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
            raise PrivacyError(
                f"accountant must be one of {list(ACCOUNTANTS)}, got {self.accountant!r}"
            )
        if self.dp and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise PrivacyError(f"epsilon must be a positive number, got {self.target_epsilon}")
        if self.max_grad_norm <= 0:
            raise PrivacyError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.epochs < 1 or self.batch_size < 1 or self.max_physical_batch_size < 1:
            raise PrivacyError("epochs, batch size and physical batch size must be at least 1")


@dataclass(frozen=True, slots=True)
class FitResult:
    """What the loop did, for the privacy report."""

    epsilon: float | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    seconds: float
    loop_seconds: float
    fixes: tuple[str, ...]
    losses: tuple[float, ...]


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
) -> tuple[nn.Module, FitResult]:
    """Train ``module``'s trainable parameters on ``dataset`` (items ``(input, target)``).

    Returns the trained module (unwrapped from Opacus) and the accounting. The input of a
    batch goes to ``module(input)``; ``per_example(output, target)`` gives [B] losses.

    Raises:
        PrivacyError: bad settings, or no noise level reaches the target ε.
    """
    settings.check()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    n = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=not settings.dp,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    params = [p for p in module.parameters() if p.requires_grad]
    criterion = PerExampleLoss(per_example)
    fixes: tuple[str, ...] = ()
    engine: Any = None
    if settings.dp:
        from opacus import PrivacyEngine

        _register_samplers()
        module, fixes = validate_module(module)
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer = OPTIMIZERS[settings.optimizer](params, settings.lr)
        with warnings.catch_warnings():
            # Opacus warns that secure_mode is off: a CSPRNG for the noise is a deployment
            # choice (``secure_mode=True`` needs torchcsprng); the report records it.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant=settings.accountant)
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
                    target_delta=settings.delta,
                    epochs=settings.epochs,
                    max_grad_norm=settings.max_grad_norm,
                    poisson_sampling=True,
                    grad_sample_mode=mode,
                    noise_generator=torch.Generator().manual_seed(settings.seed + 1),
                )
        except ValueError as exc:
            raise PrivacyError(f"cannot reach epsilon={settings.target_epsilon}: {exc}") from exc
        if mode == "ghost":
            module, optimizer, criterion, loader = made
        else:
            module, optimizer, loader = made
        sample_rate = float(loader.sample_rate)
    else:
        optimizer = OPTIMIZERS[settings.optimizer](params, settings.lr)
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
        step, losses, eps = _loop(
            module, optimizer, criterion, loader, engine, settings, progress, epsilon_every, total
        )
        loop_seconds = time.perf_counter() - loop_started
    noise: float | None = None
    if engine is not None:
        with warnings.catch_warnings():
            _quiet_accountant()
            eps = float(engine.get_epsilon(settings.delta))
        noise = float(optimizer.noise_multiplier)  # type: ignore[attr-defined]
        wrapper: Any = module
        wrapper.cleanup()  # removes the hooks and the attributes Opacus put on parameters
        module = wrapper._module  # the original module, trained in place
    module.train(False)
    return module, FitResult(
        epsilon=eps,
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps=step,
        seconds=time.perf_counter() - started,
        loop_seconds=loop_seconds,
        fixes=fixes,
        losses=tuple(losses),
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
) -> tuple[int, list[float], float | None]:
    step = 0
    losses: list[float] = []
    eps: float | None = None
    spent = _EpsilonSoFar(engine, optimizer, loader, settings) if engine is not None else None
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
            losses.append(float(loss.item()))
            if spent is not None and (step % epsilon_every == 0 or step == total):
                eps = spent.at(step)
            progress(step, total, losses[-1], eps)
    return step, losses, eps


class _EpsilonSoFar:
    """ε after ``k`` steps for the progress bar, cheaply.

    With RDP and a fixed (σ, q) the Rényi divergence adds up over steps, so one step's curve
    is computed once and scaled; Opacus' ``get_epsilon`` recomputes it on every call (about
    0.4 s here, as long as several training steps). The report's ε comes from the engine.
    """

    def __init__(self, engine: Any, optimizer: Any, loader: Any, settings: DPSettings) -> None:
        self.engine = engine
        self.delta = settings.delta
        self.orders: list[float] = []
        self.per_step: Any = None
        if settings.accountant == "rdp":
            from opacus.accountants.analysis import rdp
            from opacus.accountants.rdp import RDPAccountant

            self.orders = list(RDPAccountant.DEFAULT_ALPHAS)
            self.per_step = rdp.compute_rdp(
                q=float(loader.sample_rate),
                noise_multiplier=float(optimizer.noise_multiplier),
                steps=1,
                orders=self.orders,
            )

    def at(self, step: int) -> float:
        """ε spent after ``step`` steps."""
        if self.per_step is None:
            return float(self.engine.get_epsilon(self.delta))
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
