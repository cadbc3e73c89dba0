"""Server content rules: banned words and phrases per guild, plus the owners' default list for every guild.

Pure code (no I/O): the store keeps the rules, the service compiles a guild's rules once and asks
`CompiledRules.match(text)` for every prompt and negative prompt before anything is downloaded or reserved.

How text and rules are compared (both sides go through the same steps):
- Unicode NFKC (full-width "ＢＡＤ" -> "BAD", half-width katakana -> full width, ligatures split), then casefold.
- Invisible characters are deleted: format characters (zero-width space/joiners, soft hyphen, BOM; category
  Cf) and non-spacing/enclosing marks (Mn/Me, e.g. a combining strike-through drawn over each letter). NFKC
  has already composed accented letters, so "é" stays a letter.
- Whitespace and punctuation/symbols separate words; letters and digits make words.
- A rule written in a script without spaces between words (Chinese, Japanese, Korean, Thai, ...; any such
  character in the rule) matches as a substring of the text with every separator removed: "坏词" matches
  "这是坏词吗", "坏 词", "坏.词" and "坏\u200b词".
- Any other rule matches whole words only ("ass" does not match "class"), where characters of the scripts
  without spaces also count as word boundaries ("一只bad猫" contains the word "bad").
- Evasion by separators (the rule this module chose): a word rule also matches the text read with
  punctuation *between* two letters removed ("b.a.d", "b-a-d", "ba.d" -> "bad") and with runs of
  space-separated single letters joined ("b a d" -> "bad"). The plain reading is tried too, so "kill-switch"
  still contains the word "kill". A rule is tried in both of its own readings as well ("e-mail" matches
  "email" and "e mail").

Bounds: at most `MAX_RULES_PER_SCOPE` rules per guild and as many in the owners' default list, each at
most `MAX_PHRASE_CHARS` characters (typed and normalised). A guild's rules plus the defaults compile into
two Aho-Corasick automata, so one match is three linear passes over the text whatever the number of rules.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_SCOPE = 0  # the guild id under which the owners' default list (for every guild) is kept
MAX_RULES_PER_SCOPE = 200  # per guild, and separately for the owners' default list
MAX_PHRASE_CHARS = 100

# Scripts written without spaces between words: their characters match as substrings and bound words.
_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31A0, 0x31FF),  # Bopomofo extended, Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3134F),  # CJK extensions B-G
)
_NO_SPACE_STARTS = [start for start, _ in _NO_SPACE_RANGES]

_DROP, _SPACE, _PUNCT, _WORD, _NO_SPACE_WORD = range(5)


class RuleChange(StrEnum):
    """What adding a rule did: added, already there (same key), or refused because the list is full."""

    DONE = "done"
    EXISTS = "exists"
    FULL = "full"


class InvalidRule(ValueError):
    """A phrase that can't be a rule. `reason` is "empty" (no letters or digits) or "too_long"."""

    def __init__(self, reason: str, *, limit: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ContentRule:
    """One banned word or phrase as a manager typed it; `guild_id == DEFAULT_SCOPE` for the owners' default."""

    phrase: str
    guild_id: int

    @property
    def is_default(self) -> bool:
        """True for the owners' rule that applies to every guild."""
        return self.guild_id == DEFAULT_SCOPE


def _is_no_space(ch: str) -> bool:
    code = ord(ch)
    i = bisect.bisect_right(_NO_SPACE_STARTS, code) - 1
    return i >= 0 and code <= _NO_SPACE_RANGES[i][1]


def _kind(ch: str) -> int:
    if ch.isspace():
        return _SPACE
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me"):
        return _DROP
    if category[0] in "LN" or category == "Mc":
        return _NO_SPACE_WORD if _is_no_space(ch) else _WORD
    return _PUNCT


def normalise(text: str) -> str:
    """NFKC, casefolded, invisible characters removed, whitespace collapsed to single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if _kind(ch) != _DROP)
    return " ".join(kept.split())


@dataclass(frozen=True, slots=True)
class _Readings:
    spaced: str  # words separated by one space; no-space-script characters each a word of their own
    joined: str  # as `spaced`, after removing punctuation between letters and joining spaced single letters
    compact: str  # letters and digits only


def _tokens(chars: list[tuple[str, int]]) -> list[tuple[str, bool]]:
    """Words as (text, written in a no-space script); punctuation and whitespace separate them."""
    tokens: list[tuple[str, bool]] = []
    word: list[str] = []
    for ch, kind in chars:
        if kind == _WORD:
            word.append(ch)
            continue
        if word:
            tokens.append(("".join(word), False))
            word = []
        if kind == _NO_SPACE_WORD:
            tokens.append((ch, True))
    if word:
        tokens.append(("".join(word), False))
    return tokens


def _without_inner_punctuation(chars: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Drop each run of punctuation that sits directly between two letters/digits ("b.a.d" -> "bad")."""
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(chars):
        if chars[i][1] != _PUNCT:
            out.append(chars[i])
            i += 1
            continue
        end = i
        while end < len(chars) and chars[end][1] == _PUNCT:
            end += 1
        inner = bool(out) and out[-1][1] >= _WORD and end < len(chars) and chars[end][1] >= _WORD
        if not inner:
            out.extend(chars[i:end])
        i = end
    return out


def _join_spelled_out(tokens: list[tuple[str, bool]]) -> list[str]:
    """Join runs of two or more single-letter words ("b a d" -> "bad"); no-space-script words stay apart."""
    words: list[str] = []
    run: list[str] = []
    for text, no_space in tokens:
        if len(text) == 1 and not no_space:
            run.append(text)
            continue
        if run:
            words.append("".join(run))
            run = []
        words.append(text)
    if run:
        words.append("".join(run))
    return words


def _readings(text: str) -> _Readings:
    folded = unicodedata.normalize("NFKC", text).casefold()
    chars = [(ch, kind) for ch in folded if (kind := _kind(ch)) != _DROP]
    spaced = " ".join(word for word, _ in _tokens(chars))
    joined = " ".join(_join_spelled_out(_tokens(_without_inner_punctuation(chars))))
    compact = "".join(ch for ch, kind in chars if kind >= _WORD)
    return _Readings(spaced=spaced, joined=joined, compact=compact)


def _is_substring_rule(readings: _Readings) -> bool:
    return any(_is_no_space(ch) for ch in readings.compact)


def phrase_key(phrase: str) -> str:
    """The canonical form of a rule: two phrases with the same key match the same texts.

    Raises `InvalidRule` for a phrase with no letters or digits, or longer than `MAX_PHRASE_CHARS`.
    """
    stripped = phrase.strip()
    if len(stripped) > MAX_PHRASE_CHARS:
        raise InvalidRule("too_long", limit=MAX_PHRASE_CHARS)
    readings = _readings(stripped)
    if not readings.compact:
        raise InvalidRule("empty")
    # NFKC can expand one character into several ("㍿" -> "株式会社"): bound the normalised form too.
    if len(readings.spaced) > MAX_PHRASE_CHARS:
        raise InvalidRule("too_long", limit=MAX_PHRASE_CHARS)
    return readings.compact if _is_substring_rule(readings) else readings.spaced


class _Automaton:
    """Aho-Corasick over a set of patterns; `first(text)` finds the earliest-ending pattern in one pass."""

    def __init__(self) -> None:
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._hit: list[int] = [-1]  # payload of this node's pattern, else of its longest matching suffix

    def add(self, pattern: str, payload: int) -> None:
        node = 0
        for ch in pattern:
            nxt = self._goto[node].get(ch)
            if nxt is None:
                nxt = len(self._goto)
                self._goto[node][ch] = nxt
                self._goto.append({})
                self._fail.append(0)
                self._hit.append(-1)
            node = nxt
        if self._hit[node] == -1:  # an identical earlier pattern (a guild rule before a default) wins
            self._hit[node] = payload

    def build(self) -> None:
        queue = deque(self._goto[0].values())
        while queue:
            node = queue.popleft()
            if self._hit[node] == -1:
                self._hit[node] = self._hit[self._fail[node]]
            for ch, child in self._goto[node].items():
                fallback = self._fail[node]
                while fallback and ch not in self._goto[fallback]:
                    fallback = self._fail[fallback]
                target = self._goto[fallback].get(ch, 0)
                self._fail[child] = target if target != child else 0
                queue.append(child)

    def first(self, text: str) -> int:
        """The payload of the pattern that ends earliest in `text` (the longest at that place), or -1."""
        goto, fail, hit = self._goto, self._fail, self._hit
        node = 0
        for ch in text:
            while node and ch not in goto[node]:
                node = fail[node]
            node = goto[node].get(ch, 0)
            if hit[node] != -1:
                return hit[node]
        return -1


class CompiledRules:
    """One guild's rules and the owners' defaults, ready to match many texts."""

    def __init__(self, rules: Iterable[ContentRule]) -> None:
        self.rules: list[ContentRule] = []
        self._words = _Automaton()  # whole-word rules, matched as " word " in padded readings
        self._substrings = _Automaton()  # rules with no-space-script characters, matched in the compact reading
        for rule in rules:
            stripped = rule.phrase.strip()
            if len(stripped) > MAX_PHRASE_CHARS:
                continue  # the store refuses these; skip rather than trust a hand-edited row
            readings = _readings(stripped)
            if not readings.compact:
                continue
            index = len(self.rules)
            self.rules.append(rule)
            if _is_substring_rule(readings):
                self._substrings.add(readings.compact, index)
            else:
                for reading in (readings.spaced, readings.joined):
                    self._words.add(f" {reading} ", index)
        self._words.build()
        self._substrings.build()

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, text: str | None) -> ContentRule | None:
        """The rule `text` breaks, or None. Linear in the length of `text`."""
        if not text or not self.rules:
            return None
        readings = _readings(text)
        for automaton, reading in (
            (self._words, f" {readings.spaced} "),
            (self._words, f" {readings.joined} "),
            (self._substrings, readings.compact),
        ):
            found = automaton.first(reading)
            if found != -1:
                return self.rules[found]
        return None


def compile_rules(guild_rules: Iterable[ContentRule], default_rules: Iterable[ContentRule]) -> CompiledRules:
    """A guild's own rules first (so an identical default is reported as the guild's), then the defaults."""
    return CompiledRules([*guild_rules, *default_rules])


class RulesCache:
    """Compiled rules per guild, valid for one opaque `version` of the stored rules.

    The service asks `get(guild_id, version)` with the version the store reports (so another process's
    change is seen), compiles on a miss and `put`s the result; `invalidate` drops a guild at once after a
    local change, and invalidating `DEFAULT_SCOPE` drops every guild, since all of them include the defaults.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Hashable, CompiledRules]] = {}

    def get(self, guild_id: int, version: Hashable) -> CompiledRules | None:
        """The compiled rules, or None when absent or compiled from another `version`."""
        entry = self._entries.get(guild_id)
        if entry is None or entry[0] != version:
            return None
        return entry[1]

    def put(self, guild_id: int, version: Hashable, compiled: CompiledRules) -> None:
        """Keep `compiled` as the guild's rules at `version`, replacing any older entry."""
        self._entries[guild_id] = (version, compiled)

    def invalidate(self, guild_id: int) -> None:
        """Drop the guild's entry now (every guild's for `DEFAULT_SCOPE`)."""
        if guild_id == DEFAULT_SCOPE:
            self._entries.clear()
        else:
            self._entries.pop(guild_id, None)

    def __len__(self) -> int:
        return len(self._entries)
