"""The privacy claim holds: fresh randomness, RDP/PRV only, ε recomputed independently, no
private row outside the accounting, δ < 1/n in the library, a diverged run refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_slice
from typer.testing import CliRunner

from guardrails.privacy import PrivacyError


def _settings(**kw: Any) -> Any:
    from guardrails.privacy.engine import DPSettings

    base: dict[str, Any] = {
        "target_epsilon": 3.0,
        "epochs": 1,
        "batch_size": 64,
        "max_physical_batch_size": 64,
        "lr": 1e-2,
    }
    return DPSettings(**{**base, **kw})


def _fast() -> Any:
    from guardrails.privacy.classifier import DPClassifierConfig

    return DPClassifierConfig(buckets=2**10, dim=16, hidden=16)


def _weights(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.fixture
def tiny(tmp_path: Path) -> list[Any]:
    """120 labelled records."""
    from guardrails.privacy.data import read_labelled

    return read_labelled(write_slice(tmp_path / "tiny.jsonl", "train.jsonl", 0, 120))


def test_two_runs_with_the_same_arguments_differ(tiny: list[Any]) -> None:
    """Without a fixed seed, identical calls give different weights; with one, identical ones."""
    from guardrails.privacy.classifier import train_private_classifier

    fresh = [
        _weights(train_private_classifier(tiny, settings=_settings(), cfg=_fast())[0])
        for _ in range(2)
    ]
    assert float((fresh[0] - fresh[1]).norm()) > 1e-3
    fixed = [
        _weights(train_private_classifier(tiny, settings=_settings(fixed_seed=5), cfg=_fast())[0])
        for _ in range(2)
    ]
    assert torch.equal(fixed[0], fixed[1])  # the seed is the only thing the entropy replaces


def test_fixed_seed_run_says_not_private_in_its_first_field(
    tmp_path: Path, small_train: Path
) -> None:
    """A fixed-seed run's report opens with NOT PRIVATE; a default one with 'private:'."""
    from guardrails.privacy.runs import classifier_run

    fixed = classifier_run(
        small_train, tmp_path / "a", settings=_settings(fixed_seed=3), cfg=_fast()
    )
    stored = json.loads((tmp_path / "a" / "privacy_report.json").read_text())
    assert next(iter(stored)) == "claim"
    assert stored["claim"].startswith("NOT PRIVATE")
    assert not fixed.private
    assert "fixed seed 3" in fixed.rng
    fresh = classifier_run(small_train, tmp_path / "b", settings=_settings(), cfg=_fast())
    assert fresh.claim.startswith("private:")
    assert "os.urandom" in fresh.rng or "torchcsprng" in fresh.rng
    assert not [k for k in (*fresh.to_dict(), *fresh.extra) if "seed" in k]


def test_cli_refuses_a_seed_without_the_insecure_flag(tmp_path: Path, small_train: Path) -> None:
    """`--seed N` exits 2 before training and names --insecure-fixed-seed; nothing is written."""
    from guardrails.cli import app

    for cmd in (["privacy", "train-classifier"], ["privacy", "train-generator"]):
        result = CliRunner().invoke(
            app,
            [*cmd, "--data", str(small_train), "--seed", "13", "--out", str(tmp_path / "x")],
        )
        assert result.exit_code == 2
        assert "--insecure-fixed-seed" in result.output
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("accountant", ["gdp", "GDP", "bogus"])
def test_gdp_is_never_a_calibration_accountant(accountant: str) -> None:
    """Settings refuse any accountant but rdp and prv, gdp included."""
    with pytest.raises(PrivacyError, match="accountant must be one of"):
        _settings(accountant=accountant).check()


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_reported_epsilon_matches_independent_accountant_calls(
    tiny: list[Any], accountant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ε by RDP and PRV recomputed from (σ, q, steps, δ) by separate Opacus calls; GDP unused."""
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis import rdp
    from opacus.accountants.gdp import GaussianAccountant

    from guardrails.privacy.classifier import train_private_classifier

    def no_gdp(*_a: object, **_k: object) -> float:
        raise AssertionError("GDP used")

    monkeypatch.setattr(GaussianAccountant, "get_epsilon", no_gdp)
    _, r = train_private_classifier(
        tiny, settings=_settings(accountant=accountant, epochs=2), cfg=_fast()
    )
    assert r.noise_multiplier is not None
    assert r.delta is not None
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256]
    curve = rdp.compute_rdp(
        q=r.sample_rate, noise_multiplier=r.noise_multiplier, steps=r.steps, orders=orders
    )
    eps_rdp, _ = rdp.get_privacy_spent(orders=orders, rdp=curve, delta=r.delta)
    prv = PRVAccountant()
    prv.history = [(r.noise_multiplier, r.sample_rate, r.steps)]
    eps_prv = prv.get_epsilon(delta=r.delta)
    assert r.epsilons["rdp"] == pytest.approx(eps_rdp, rel=1e-6)
    assert r.epsilons["prv"] == pytest.approx(eps_prv, rel=1e-3)
    assert r.epsilon == pytest.approx(min(eps_rdp, eps_prv), rel=1e-3)
    assert r.epsilon is not None
    assert r.epsilon <= 3.0
    assert r.epsilons[accountant] is not None
    assert r.epsilons[accountant] <= 3.0 + 1e-9  # σ was calibrated with this one


def test_thresholds_and_metrics_never_touch_private_rows(
    tmp_path: Path, small_train: Path, small_val: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --val thresholds stay 0.5; with it, calibration sees val rows only; no private
    statistic (final loss, private hold-out) is in the report."""
    import guardrails.classifier.calibration as calibration
    from guardrails.privacy.runs import classifier_run

    bare = classifier_run(small_train, tmp_path / "a", settings=_settings(), cfg=_fast())
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert set(config["thresholds"].values()) == {0.5}
    assert set(config["threshold_method"].values()) == {"default"}
    assert bare.extra["thresholds_from"] == "default 0.5"
    seen: list[int] = []
    real = calibration.calibrate

    def spy(y: Any, scores: Any, **kw: Any) -> Any:
        seen.append(len(y))
        return real(y, scores, **kw)

    monkeypatch.setattr(calibration, "calibrate", spy)
    with_val = classifier_run(
        small_train, tmp_path / "b", settings=_settings(), cfg=_fast(), val=small_val
    )
    n_val = len(small_val.read_text().splitlines())
    assert seen
    assert set(seen) == {n_val}
    assert with_val.n_examples == len(small_train.read_text().splitlines())  # all rows trained
    text = json.dumps(with_val.to_dict())
    for leak in ("final_loss", "loss", "private_heldout"):
        assert leak not in text


def test_library_enforces_delta_below_one_over_n(tiny: list[Any]) -> None:
    """`fit` (through the trainer) refuses δ ≥ 1/n; the default δ is below 1/n."""
    from guardrails.privacy.classifier import train_private_classifier

    with pytest.raises(PrivacyError, match=r"must be in \(0, 1/n\)"):
        train_private_classifier(tiny, settings=_settings(delta=1 / 120), cfg=_fast())
    _, result = train_private_classifier(tiny, settings=_settings(), cfg=_fast())
    assert result.delta is not None
    assert 0 < result.delta < 1 / 120


def test_diverged_run_is_refused_and_not_written(
    tmp_path: Path, small_train: Path, small_val: Path
) -> None:
    """A run whose weights blow up raises TrainingDivergedError, exit 1 on the CLI, no model."""
    from guardrails.cli import app
    from guardrails.privacy.errors import TrainingDivergedError
    from guardrails.privacy.runs import classifier_run

    with pytest.raises(TrainingDivergedError, match="diverged"):
        classifier_run(
            small_train,
            tmp_path / "a",
            settings=_settings(optimizer="sgd", lr=1e30, epochs=2),
            cfg=_fast(),
            val=small_val,
        )
    assert not (tmp_path / "a").exists()
    args = ["privacy", "train-classifier", "--model", "fast", "--data", str(small_train)]
    args += ["--val", str(small_val), "--optimizer", "sgd", "--lr", "1e30", "--epochs", "2"]
    args += ["--batch-size", "64", "--no-audit", "--out", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "diverged" in result.output
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(("optimizer", "batch_size"), [("sgd", 16), ("sgd", 512), ("adam", 16)])
def test_default_lr_trains_across_batch_sizes(
    small_train: Path, small_val: Path, optimizer: str, batch_size: int
) -> None:
    """With the default lr the public val loss ends below the untrained model's."""
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.privacy.classifier import build_net, encode, public_loss
    from guardrails.privacy.classifier import train_private_classifier as train

    settings = _settings(
        lr=None, optimizer=optimizer, target_epsilon=8.0, epochs=3, batch_size=batch_size
    )
    torch.manual_seed(0)
    before = public_loss(build_net(_fast()), *encode(read_jsonl(small_val), _fast()))
    net, result = train(read_jsonl(small_train), settings=settings, cfg=_fast())
    after = public_loss(net, *encode(read_jsonl(small_val), _fast()))
    assert result.lr == settings.learning_rate
    assert after < before, (before, after)
