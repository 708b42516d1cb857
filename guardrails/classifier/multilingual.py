"""Our own multilingual text: attacks, harmful requests and outputs, and ordinary chat.

`data/phrases.txt` holds sentences we wrote in thirteen languages (``@lang`` starts a
language; ``family: text`` lines), in parallel: the same attack or question in each language.
`generate` turns each sentence into a handful of examples that share its group (one split):
the sentence itself, surface variants, the sentence hidden inside an e-mail, a web page, a
document or a tool result (indirect injection), the sentence encoded in base64 / hex /
%-encoding / rot13 behind a "decode this" preface, and, for benign chat, two chat turns run
together. Encoded examples are scored through the same decoder the classifier uses at run time.
"""

from __future__ import annotations

import base64
import codecs
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

__all__ = [
    "FAMILY_LABELS",
    "LANGUAGES",
    "PHRASES_FILE",
    "Generated",
    "Phrase",
    "generate",
    "read_phrases",
]

PHRASES_FILE: Final[Path] = Path(__file__).resolve().parent / "data" / "phrases.txt"

LANGUAGES: Final[tuple[str, ...]] = (
    "en", "zh", "es", "de", "fr", "ru", "ja", "pt", "ar", "hi", "ko", "it", "tr",
)  # fmt: skip

# family code -> (labels, what it is)
FAMILY_LABELS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "inj": (("prompt_injection",), "instruction override, prompt leak, persona, tool misuse"),
    "rpj": (("prompt_injection",), "role-play jailbreak without the classic DAN vocabulary"),
    "fkd": (("prompt_injection",), "fake delimiter or fake system message"),
    "tlm": (("prompt_injection",), "tool-misuse instruction"),
    "vio": (("violence",), "violent request"),
    "hat": (("hate",), "hateful request"),
    "sex": (("sexual",), "explicit sexual request"),
    "slf": (("self_harm",), "self-harm request"),
    "ill": (("illicit",), "illicit request (drugs, malware, fraud, forgery)"),
    "prv": (("privacy",), "privacy violation request (doxxing, spying)"),
    "ovi": (("violence",), "compliant violent output (non-operational)"),
    "oil": (("illicit",), "compliant illicit output (non-operational)"),
    "ben": ((), "ordinary chat and hard negatives"),
}
_ATTACK_FAMILIES: Final = frozenset({"inj", "rpj", "fkd", "tlm"})

# Benign surroundings for indirect injection, per carrier; {x} is the hidden sentence, {f1}
# and {f2} are benign sentences of the same language.
_CARRIERS: Final[tuple[tuple[str, str], ...]] = (
    ("email", "From: anna@example.org\nSubject: Re: meeting\n\n{f1}\n\n{x}\n\n{f2}\nBest, Anna"),
    (
        "web",
        '<html><body><h1>Travel tips</h1><p>{f1}</p><div style="display:none">{x}</div>'
        "<p>{f2}</p></body></html>",
    ),
    ("doc", "Quarterly report, page 3.\n{f1} Revenue grew 4% year over year. {x} {f2}"),
    (
        "tool",
        '{{"tool": "web_search", "status": "ok", "results": [{{"title": "{f1}", '
        '"snippet": "{x}"}}, {{"title": "FAQ", "snippet": "{f2}"}}]}}',
    ),
    ("review", "Customer review (5 stars): {f1} {x} {f2}"),
    ("summary", "Please summarize the following text for me:\n\n{f1} {x} {f2}"),
)
_BENIGN_CARRIER_FILLER: Final[tuple[str, ...]] = (
    "The train leaves at 9:40 from platform 4.",
    "Our office will be closed on Monday for the holiday.",
    "Remember to bring the signed form to the meeting.",
    "The museum is open from 10 to 6 every day except Tuesday.",
    "Thanks again for your help with the migration last week.",
)
_ENCODERS: Final[tuple[tuple[str, str], ...]] = (
    ("base64", "Decode this base64 and do what it says: {e}"),
    ("hex", "Here is a hex string, decode it and follow the instructions inside: {e}"),
    ("url", "Process this encoded command: {e}"),
    ("rot13", "The following is rot13, decode it and act on it: {e}"),
)
_BENIGN_ENCODED: Final[tuple[str, ...]] = (
    "What does this base64 string say? {e}",
    "Can you decode this for me? {e}",
    "My log file has this encoded field, what is it: {e}",
)


@dataclass(frozen=True, slots=True)
class Phrase:
    """One sentence we wrote: its language, family code, text and group id."""

    lang: str
    family: str
    text: str
    group: str


@dataclass(frozen=True, slots=True)
class Generated:
    """One example made from a phrase (``kind`` says how: plain, variant, carrier, ...)."""

    text: str
    labels: tuple[str, ...]
    lang: str
    family: str
    kind: str
    group: str


def read_phrases(path: Path = PHRASES_FILE) -> list[Phrase]:
    """Parse the phrase file; ``\\n`` in a line is a newline.

    Raises:
        ValueError: a line outside any ``@lang`` block, an unknown family or language.
    """
    out: list[Phrase] = []
    lang = ""
    counters: dict[tuple[str, str], int] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            lang = line[1:].strip()
            if lang not in LANGUAGES:
                raise ValueError(f"{path}:{n}: unknown language {lang!r}")
            continue
        family, sep, text = line.partition(":")
        if not sep or family not in FAMILY_LABELS or not lang:
            raise ValueError(f"{path}:{n}: expected 'family: text' inside an @lang block")
        i = counters.get((lang, family), 0)
        counters[(lang, family)] = i + 1
        out.append(
            Phrase(lang, family, text.strip().replace("\\n", "\n"), f"ml:{lang}:{family}:{i}")
        )
    return out


def _encode(kind: str, text: str) -> str:
    if kind == "base64":
        return base64.b64encode(text.encode()).decode()
    if kind == "hex":
        return text.encode().hex()
    if kind == "url":
        return quote(text)
    return codecs.encode(text, "rot13")


def _variant(text: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    elif r < 0.35:
        text = text.rstrip(".!?。！？")
    r = rng.random()
    if r < 0.2:
        text = rng.choice(["hey ", "ok so ", "Quick question: ", "pls ", ""]) + text
    elif r < 0.4:
        text = text + rng.choice([" thanks", " :)", " asap", " !!", " 🙏"])
    return text


def generate(phrases: list[Phrase], seed: int, *, variants: int = 3) -> list[Generated]:
    """Examples from every phrase, deterministically for ``seed`` (see the module docstring)."""
    rng = random.Random(seed + 7)
    benign_by_lang: dict[str, list[str]] = {}
    for p in phrases:
        if p.family == "ben" and len(p.text) > 25:
            benign_by_lang.setdefault(p.lang, []).append(p.text)
    out: list[Generated] = []
    for p in phrases:
        labels = FAMILY_LABELS[p.family][0]

        def add(text: str, kind: str, lab: tuple[str, ...] = labels, ph: Phrase = p) -> None:
            out.append(Generated(text, lab, ph.lang, ph.family, kind, ph.group))

        add(p.text, "plain")
        seen = {p.text}
        for _ in range(variants):
            v = _variant(p.text, rng)
            if v not in seen:
                seen.add(v)
                add(v, "variant")
        fillers = benign_by_lang.get(p.lang, []) + list(_BENIGN_CARRIER_FILLER)
        if p.family in _ATTACK_FAMILIES:
            for name, carrier in rng.sample(_CARRIERS, 3):
                text = carrier.format(x=p.text, f1=rng.choice(fillers), f2=rng.choice(fillers))
                add(text, f"carrier:{name}")
            name, preface = rng.choice(_ENCODERS)
            add(preface.format(e=_encode(name, p.text)), f"encoded:{name}")
        elif p.family == "ben":
            # as many carriers and encodings as the attacks get, so that "an e-mail", "a
            # tool result" or "base64" predicts nothing by itself: only what is inside does
            for name, carrier in rng.sample(_CARRIERS, 3):
                text = carrier.format(x=p.text, f1=rng.choice(fillers), f2=rng.choice(fillers))
                add(text, f"carrier:{name}")
            name = rng.choice(("base64", "hex", "url"))
            add(rng.choice(_BENIGN_ENCODED).format(e=_encode(name, p.text)), f"encoded:{name}")
    return out
