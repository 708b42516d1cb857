"""Loading a classifier from its weights directory, and scoring with it.

A weights directory holds ``config.json`` (kind, categories, calibrated thresholds, window
size, hyper-parameters, the weights' SHA-256) and ``model.safetensors``. Loading checks the
digest, so a truncated or edited weights file is refused instead of scoring garbage.

The fast model in fp32 is served by `NumpyFastBackend`: an embedding-bag mean and a two-layer
MLP are a few numpy calls, so the default path never imports torch (torch's import alone is
4-6 s and tens of MB) and loads in tens of milliseconds. INT8, the MiniLM option and training
use torch, imported when first needed; a test holds the two fast backends to the same scores.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from guardrails.classifier.categories import CATEGORIES
from guardrails.classifier.decoding import decoded_views
from guardrails.classifier.errors import ClassifierError
from guardrails.classifier.features import batch_ngram_ids, has_signal, signal_chars, windows
from guardrails.classifier.microbatch import MicroBatcher

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
SHIPPED: dict[str, Path] = {"fast": WEIGHTS_ROOT / "fast", "minilm": WEIGHTS_ROOT / "minilm"}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

Scores = dict[str, float]


class Backend(Protocol):
    """**Protocol:** window texts in, per-category probabilities out (rows follow texts)."""

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]: ...


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask and cgroup v2 quota, not host cores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (process-wide) and return the count in force.

    ``None`` means one thread, unless the operator set ``OMP_NUM_THREADS`` (or
    ``MKL_NUM_THREADS``), in which case torch's own reading of it is left alone: a guard
    check is a small forward pass, where one thread is fastest and leaves the other cores to
    concurrent requests, and an operator's explicit setting is never overridden. An explicit
    ``num_threads`` always applies. Inter-op threads can only be set before torch starts
    parallel work, so that part is best effort.
    """
    import torch

    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
            return int(torch.get_num_threads())
        n = 1
    else:
        n = num_threads
    if n < 1:
        raise ClassifierError(f"num_threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already started: torch keeps its setting
        torch.set_num_interop_threads(min(n, 2))
    return n


def configure_threads_if_loaded(num_threads: int | None) -> None:
    """`configure_threads`, only when torch is already imported (never imports it)."""
    if "torch" in sys.modules:
        configure_threads(num_threads)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quantize_int8(module: nn.Module) -> nn.Module:
    """INT8 dynamic quantization of every `nn.Linear` (weights int8, activations per batch).

    torch 2.13 marks `torch.ao.quantization` deprecated in favour of the separate ``torchao``
    package; we keep the built-in path (no extra dependency) and silence only its notices.
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*quantiz.*")
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {nn.Linear}, dtype=torch.qint8
        )
    return quantized


class FastBackend:
    """The hashed byte n-gram model."""

    def __init__(self, net: nn.Module, *, buckets: int) -> None:
        self.net = net.eval()
        self.buckets = buckets

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import torch

        ids, offsets = batch_ngram_ids(texts, buckets=self.buckets)
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(ids), torch.from_numpy(offsets))
            out: npt.NDArray[np.float32] = torch.sigmoid(logits).numpy()
        return out


class NumpyFastBackend:
    """The hashed byte n-gram model (mean pooling) in numpy: no torch on the default path."""

    def __init__(
        self, tensors: Mapping[str, npt.NDArray[np.floating[Any]]], *, buckets: int
    ) -> None:
        # widened once: numpy's fp16 arithmetic is emulated and costs more than the gather
        self.embedding = np.ascontiguousarray(tensors["embedding"], dtype=np.float32)
        self.w1 = np.ascontiguousarray(tensors["mlp.1.weight"].astype(np.float32).T)
        self.b1 = tensors["mlp.1.bias"].astype(np.float32)
        self.w2 = np.ascontiguousarray(tensors["mlp.4.weight"].astype(np.float32).T)
        self.b2 = tensors["mlp.4.bias"].astype(np.float32)
        self.buckets = buckets

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]:
        ids, offsets = batch_ngram_ids(texts, buckets=self.buckets)
        # one gather and sum per bag: numpy's reduceat over a (rows, dim) array and one big
        # gather for the batch both measured several times slower than this loop
        ends = np.r_[offsets[1:], len(ids)]
        mean = np.empty((len(texts), self.embedding.shape[1]), dtype=np.float32)
        for k, (start, end) in enumerate(zip(offsets.tolist(), ends.tolist(), strict=True)):
            mean[k] = np.take(self.embedding, ids[start:end], axis=0).mean(axis=0)
        hidden = np.maximum(mean @ self.w1 + self.b1, 0.0)
        logits = hidden @ self.w2 + self.b2
        out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return out


class MiniLMBackend:
    """The MLP head on the frozen MiniLM encoder."""

    def __init__(self, encoder: Any, head: nn.Module) -> None:
        self.encoder = encoder
        self.head = head.eval()

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            emb = self.encoder.encode(texts)
            out: npt.NDArray[np.float32] = torch.sigmoid(self.head(emb)).numpy()
        return out


class SafetyClassifier:
    """A loaded classifier: scores texts per category, sync or through micro-batching.

    Attributes:
        name: the shipped name or the directory it was loaded from.
        categories: category order of every score dict.
        thresholds: calibrated per category (validation split, stated precision target):
            the score at which a category is worth flagging.
        block_thresholds: calibrated per category for a higher precision target: the score
            at which a category is confident enough to refuse (the ``default`` pack's block
            rules use these). Never below ``thresholds``.
        min_signal_chars: a text with fewer signal characters (see `signal`) than this is
            too short to judge: its scores are capped just below each category's flag
            threshold, so with the calibrated thresholds it yields no finding at all (see
            `has_signal`).
        digest: SHA-256 of the weights file, for provenance in the audit log.
        int8: whether INT8 dynamic quantization is applied.
        config: the weights directory's config, metrics included.
    """

    def __init__(
        self,
        *,
        name: str,
        backend: Backend,
        config: Mapping[str, Any],
        digest: str,
        int8: bool,
        max_batch_size: int,
        max_wait_ms: float,
    ) -> None:
        if max_batch_size < 1:
            raise ClassifierError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.name = name
        self.backend = backend
        self.config = dict(config)
        self.digest = digest
        self.int8 = int8
        self.categories: tuple[str, ...] = tuple(config["categories"])
        self.thresholds: dict[str, float] = {
            c: float(config["thresholds"][c]) for c in self.categories
        }
        block = config.get("block_thresholds") or {}
        self.block_thresholds: dict[str, float] = {
            c: max(self.thresholds[c], float(block.get(c, self.thresholds[c])))
            for c in self.categories
        }
        self.min_signal_chars = int(config.get("min_signal_chars", 12))
        self._cap = np.array(
            [np.nextafter(self.thresholds[c], 0.0) for c in self.categories], dtype=np.float64
        )
        self.decode = bool(config.get("decode_payloads", True))
        self.window_chars = int(config["window_chars"])
        self.stride_chars = int(config["stride_chars"])
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._lock = threading.Lock()
        self._batchers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, MicroBatcher[Scores]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"SafetyClassifier(name={self.name!r}, int8={self.int8}, digest={self.digest[:12]})"

    def score(self, texts: Sequence[str]) -> list[Scores]:
        """One dict per text: every category -> probability in [0, 1].

        Empty or whitespace-only text scores 0.0 everywhere without running the model. Text
        longer than ``window_chars`` is cut into overlapping windows and each category takes
        its maximum over the windows. Payloads hidden in base64, hex, %-encoding or (when
        hinted) rot13 are decoded (bounded, see `guardrails.classifier.decoding`) and their
        windows count as the text's own. A text with too little signal (fewer than
        ``min_signal_chars``, see `has_signal`) scores just below each category's calibrated
        threshold at most.

        Raises:
            ClassifierError: ``texts`` is a bare string or holds something that is not a str.
        """
        items = _check_texts(texts)
        window_texts: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(items):
            if not text.strip():
                continue
            views = [text, *decoded_views(text)] if self.decode else [text]
            for view in views:
                for w in windows(view, size=self.window_chars, stride=self.stride_chars):
                    window_texts.append(w)
                    owners.append(i)
        probs = np.zeros((len(items), len(self.categories)), dtype=np.float64)
        if window_texts:
            # similar lengths share a batch: less padding for MiniLM, no cost for the fast model
            order = sorted(range(len(window_texts)), key=lambda j: len(window_texts[j]))
            out = np.empty((len(window_texts), len(self.categories)), dtype=np.float64)
            for start in range(0, len(order), self.max_batch_size):
                idx = order[start : start + self.max_batch_size]
                with self._lock:
                    out[idx] = self.backend.probabilities([window_texts[j] for j in idx])
            np.maximum.at(probs, np.asarray(owners), out)
        short = [i for i, text in enumerate(items) if not has_signal(text, self.min_signal_chars)]
        if short:
            # "no", "ok!", "who are you?": too little to judge, so never a finding on its own
            probs[short] = np.minimum(probs[short], self._cap)
        return [dict(zip(self.categories, map(float, row), strict=True)) for row in probs]

    async def score_async(self, texts: Sequence[str]) -> list[Scores]:
        """`score`, with concurrent callers on this event loop gathered into shared batches."""
        items = _check_texts(texts)
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = MicroBatcher(
                self.score, max_batch=self.max_batch_size, max_wait_s=self.max_wait_ms / 1000
            )
            self._batchers[loop] = batcher
        return await batcher.submit(items)

    def over_threshold(self, scores: Mapping[str, float]) -> list[str]:
        """The categories whose score reaches their calibrated threshold."""
        return [c for c in self.categories if scores.get(c, 0.0) >= self.thresholds[c]]

    def signal(self, text: str) -> int:
        """How much the model has to go on: letters and digits, a CJK/kana/hangul one as 3."""
        return signal_chars(text)

    def has_signal(self, text: str) -> bool:
        """Whether ``text`` has enough signal to be judged (``min_signal_chars`` or more).

        "yes", "ok!", "who are you?" and "good morning :)" are below the line. `score` caps
        such a text just below every calibrated threshold; a guard applying a policy with
        lower explicit thresholds should still never block on the classifier alone when
        this is false (the rules still block).
        """
        return has_signal(text, self.min_signal_chars)

    def warm(self) -> SafetyClassifier:
        """Run one forward pass so the first real request pays no first-call costs."""
        self.score(["warm-up: the quick brown fox jumps over the lazy dog. 你好"])
        return self


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise ClassifierError(
            f"score() takes a sequence of texts, got a single {type(texts).__name__}; "
            "wrap it in a list"
        )
    try:
        items = list(texts)
    except TypeError as exc:
        raise ClassifierError(
            f"score() takes a sequence of str, got {type(texts).__name__}"
        ) from exc
    bad = [f"[{i}] {type(t).__name__}" for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise ClassifierError(f"score() takes only str items; not text: {', '.join(bad[:5])}")
    return items


def read_config(directory: Path) -> dict[str, Any]:
    """The directory's config.json, checked for the keys loading needs."""
    path = directory / CONFIG_FILE
    if not path.exists():
        raise ClassifierError(f"no classifier weights at {directory}: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"corrupt classifier config {path}: {exc}") from exc
    required = (
        "kind",
        "categories",
        "thresholds",
        "window_chars",
        "stride_chars",
        "weights_sha256",
    )
    missing = [k for k in required if not isinstance(config, dict) or k not in config]
    if missing:
        raise ClassifierError(f"classifier config {path} lacks {missing}")
    return dict(config)


def _verified_path(directory: Path, expected_sha256: str) -> tuple[Path, str]:
    path = directory / WEIGHTS_FILE
    if not path.exists():
        raise ClassifierError(f"classifier weights file missing: {path}")
    digest = file_sha256(path)
    if digest != expected_sha256:
        raise ClassifierError(
            f"classifier weights {path} are corrupt or were replaced: SHA-256 {digest[:16]}... "
            f"does not match config.json's {expected_sha256[:16]}..."
        )
    return path, digest


def _load_tensors(directory: Path, expected_sha256: str) -> tuple[dict[str, torch.Tensor], str]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, digest = _verified_path(directory, expected_sha256)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ClassifierError(f"cannot read classifier weights {path}: {exc}") from exc
    return {k: v.float() for k, v in tensors.items()}, digest


def _load_arrays(
    directory: Path, expected_sha256: str
) -> tuple[dict[str, npt.NDArray[np.floating[Any]]], str]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path, digest = _verified_path(directory, expected_sha256)
    try:
        arrays: dict[str, npt.NDArray[np.floating[Any]]] = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ClassifierError(f"cannot read classifier weights {path}: {exc}") from exc
    return arrays, digest


def _numpy_fast(config: Mapping[str, Any], arrays: Mapping[str, Any]) -> Backend:
    hp = config["hparams"]
    buckets, dim, hidden = int(hp["buckets"]), int(hp["dim"]), int(hp["hidden"])
    n_out = len(config["categories"])
    expected = {
        "embedding": (buckets, dim),
        "mlp.1.weight": (hidden, dim),
        "mlp.1.bias": (hidden,),
        "mlp.4.weight": (n_out, hidden),
        "mlp.4.bias": (n_out,),
    }
    got = {k: tuple(v.shape) for k, v in arrays.items()}
    if got != expected:
        raise ClassifierError(
            f"classifier weights do not fit the model in config.json: expected {expected}, "
            f"found {got}"
        )
    return NumpyFastBackend(arrays, buckets=buckets)


def _build_fast(config: Mapping[str, Any], tensors: dict[str, torch.Tensor], int8: bool) -> Backend:
    from guardrails.classifier.models import ByteNgramNet

    hp = config["hparams"]
    net = ByteNgramNet(
        buckets=int(hp["buckets"]),
        dim=int(hp["dim"]),
        hidden=int(hp["hidden"]),
        n_out=len(config["categories"]),
        pool=str(hp.get("pool", "mean+max")),
    )
    _load_state(net, tensors)
    module: nn.Module = quantize_int8(net.eval()) if int8 else net.eval()
    return FastBackend(module, buckets=int(hp["buckets"]))


def _build_minilm(
    config: Mapping[str, Any], tensors: dict[str, torch.Tensor], int8: bool
) -> Backend:
    from guardrails.classifier.models import MiniLMEncoder, MiniLMHead

    hp = config["hparams"]
    head = MiniLMHead(dim=int(hp["dim"]), hidden=int(hp["hidden"]), n_out=len(config["categories"]))
    _load_state(head, tensors)
    encoder = MiniLMEncoder(max_tokens=int(hp["max_tokens"]))
    if int8:
        encoder.model = quantize_int8(encoder.model)
        head = quantize_int8(head)  # type: ignore[assignment]
    return MiniLMBackend(encoder, head.eval())


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ClassifierError(
            f"classifier weights do not fit the model in config.json: {exc}"
        ) from exc


BUILDERS: dict[str, Callable[[Mapping[str, Any], dict[str, Any], bool], Backend]] = {
    "byte_ngram": _build_fast,
    "minilm_head": _build_minilm,
}


def resolve(name_or_path: str) -> tuple[str, Path]:
    """(display name, directory) for a shipped name or a path."""
    if name_or_path in SHIPPED:
        return name_or_path, SHIPPED[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        return str(path), path
    raise ClassifierError(
        f"unknown classifier {name_or_path!r}: expected one of {sorted(SHIPPED)} "
        "or a directory holding config.json and model.safetensors"
    )


def cache_key(name_or_path: str) -> tuple[object, ...]:
    """What identifies a load: the directory and its files' sizes and modification times."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ClassifierError(f"classifier name must be a str, got {type(name_or_path).__name__}")
    _, directory = resolve(str(name_or_path))
    stamps: list[object] = [str(directory.resolve())]
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            st = (directory / name).stat()
            stamps.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def load(
    name_or_path: str,
    *,
    int8: bool = False,
    num_threads: int | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
) -> SafetyClassifier:
    """See `guardrails.classifier.load_classifier`."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ClassifierError(f"classifier name must be a str, got {type(name_or_path).__name__}")
    name, directory = resolve(str(name_or_path))
    config = read_config(directory)
    builder = BUILDERS.get(str(config["kind"]))
    if builder is None:
        raise ClassifierError(f"unknown classifier kind {config['kind']!r} in {directory}")
    unknown = set(config["categories"]) - set(CATEGORIES)
    if unknown:
        raise ClassifierError(f"{directory}: config names unknown categories {sorted(unknown)}")
    numpy_path = (
        str(config["kind"]) == "byte_ngram"
        and not int8
        and (str(config.get("hparams", {}).get("pool", "mean")) == "mean")
    )
    if numpy_path:
        arrays, digest = _load_arrays(directory, str(config["weights_sha256"]))
        backend = _numpy_fast(config, arrays)
        configure_threads_if_loaded(num_threads)
    else:
        configure_threads(num_threads)
        tensors, digest = _load_tensors(directory, str(config["weights_sha256"]))
        backend = builder(config, tensors, int8)
    return SafetyClassifier(
        name=name,
        backend=backend,
        config=config,
        digest=digest,
        int8=int8,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
    )


def write_model_dir(
    directory: Path,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    half: Sequence[str] = (),
) -> str:
    """Write weights (names in ``half`` stored as float16) and config; returns the SHA-256."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    stored = {
        k: (v.detach().to(torch.float16) if k in half else v.detach().float()).contiguous()
        for k, v in tensors.items()
    }
    path = directory / WEIGHTS_FILE
    save_file(stored, str(path))
    digest = file_sha256(path)
    full = {**config, "weights_file": WEIGHTS_FILE, "weights_sha256": digest}
    (directory / CONFIG_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return digest


def update_config(directory: Path, **changes: Any) -> None:
    """Rewrite keys of config.json (thresholds, metrics) without touching the weights."""
    config = read_config(directory)
    config.update(changes)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


__all__ = [
    "BUILDERS",
    "CONFIG_FILE",
    "SHIPPED",
    "WEIGHTS_FILE",
    "WEIGHTS_ROOT",
    "Backend",
    "FastBackend",
    "MiniLMBackend",
    "NumpyFastBackend",
    "SafetyClassifier",
    "Scores",
    "available_cpus",
    "cache_key",
    "configure_threads",
    "configure_threads_if_loaded",
    "file_sha256",
    "load",
    "quantize_int8",
    "read_config",
    "resolve",
    "update_config",
    "write_model_dir",
]
