"""The gres grammar shared by what users write, what Slurm prints and trace files.

A gres text is a comma-separated list of terms; a comma inside a detail does not split::

    term   := [prefix] name [":" type] [(":" | "=") count] [detail]
    prefix := "gres:"  (Slurm 22.05 tres_per_node)  |  "gres/"  (24.11+, and TRES lists)
    detail := "(" ... ")"  e.g. (IDX:0-3), (S:0-1), (CNT:4)

- ``=`` before the last field makes it the count (``gres/gpu=2``, ``gpu:1g.10gb=2``); ``mem=<size>`` is the
  memory-size spelling of a type, not a count (``gpu:mem=20G``).
- With one field after the name, it is the count when it looks like one, else the type. What looks like a
  count is the caller's: Slurm prints ``shard:2k`` (2048), where a user's ``gpu:20g`` is a memory size.
- Counts are digits, optionally with ``k``/``m``/``g``/``t`` (each x1024), as Slurm prints them.
- A ``(CNT:n)`` detail gives the count (``mig(CNT:4)``); other details (the index list) are dropped.
- No field may be empty; a term has at most name, type and count.

This module splits a text into terms and a term into its fields; what a type means (a MIG profile, a memory
size) and which counts are allowed is for the callers: :mod:`slurm_gpu.core.requests` for what users write,
:mod:`slurm_gpu.slurm.parse` for what Slurm prints.

>>> split_terms("gpu:1g.10gb:2(IDX:0,2), mig:4")
['gpu:1g.10gb:2(IDX:0,2)', 'mig:4']
>>> parse_term("gres/gpu:1g.10gb=2")
GresTerm(name='gpu', type='1g.10gb', count='2', detail='', prefixed=True, raw='gres/gpu:1g.10gb=2')
>>> parse_term("mig(CNT:4)").count, parse_term("gpu:2(IDX:0,2)").count, parse_term("gres:gpu").count
('4', '2', None)
>>> parse_count("2k", "gres/shard:2k")
2048
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from slurm_gpu.core.errors import RequestError

__all__ = [
    "PREFIXES",
    "GresTerm",
    "split_outside",
    "split_terms",
    "strip_prefix",
    "split_detail",
    "split_fields",
    "is_count",
    "parse_count",
    "parse_term",
]

PREFIXES = ("gres:", "gres/")
_COUNT = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_CNT = re.compile(r"^CNT:(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class GresTerm:
    """One term in its fields as written; ``count`` is None where none was written (one unit).

    ``detail`` is the text inside the trailing parentheses (``IDX:0-3``), ``prefixed`` whether the term
    began with ``gres:`` or ``gres/``, ``raw`` the term as given, surrounding blanks removed.
    """

    name: str
    type: Optional[str]
    count: Optional[str]
    detail: str = ""
    prefixed: bool = False
    raw: str = ""

    @property
    def detail_kind(self) -> str:
        """``IDX`` for ``(IDX:0-3)``, ``CNT`` for ``(CNT:4)``; ``""`` without a detail.

        >>> parse_term("gpu:2(idx:0,2)").detail_kind
        'IDX'
        """
        return self.detail.partition(":")[0].strip().upper()


def split_outside(text: str, sep: str = ",", brackets: str = "()") -> List[str]:
    """Split on ``sep`` outside ``brackets`` (``gpu:2(IDX:0,2)``, ``n[1,3]``); pieces as they are.

    >>> split_outside("n[1,3],gpu5", brackets="[]")
    ['n[1,3]', 'gpu5']
    >>> split_outside("a,,b")
    ['a', '', 'b']
    """
    opening, closing = brackets[0], brackets[1]
    parts: List[str] = []
    cur: List[str] = []
    depth = 0
    for ch in text:
        if ch == opening:
            depth += 1
        elif ch == closing:
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def split_terms(text: str) -> List[str]:
    """The terms of a comma list, blanks stripped; empty terms stay, for the caller to refuse or skip."""
    return [piece.strip() for piece in split_outside(text)]


def strip_prefix(term: str) -> Tuple[str, bool]:
    """``gres:gpu:2`` and ``gres/gpu:2`` -> ``('gpu:2', True)``; ``gpu:2`` -> ``('gpu:2', False)``.

    The prefix is matched in any case (users write ``GRES:GPU:2``); the rest keeps its case.
    """
    for prefix in PREFIXES:
        if term[: len(prefix)].lower() == prefix:
            return term[len(prefix) :], True
    return term, False


def split_detail(term: str) -> Tuple[str, str]:
    """``mig:4(IDX:0-3)`` -> ``('mig:4', 'IDX:0-3')``; without a closed trailing detail ``(term, '')``.

    The detail runs from the first ``(`` to the closing ``)`` at the end.

    >>> split_detail("gpu:2(S:0-1)")
    ('gpu:2', 'S:0-1')
    >>> split_detail("gpu:2")
    ('gpu:2', '')
    """
    if term.endswith(")") and "(" in term:
        head, _, detail = term.partition("(")
        return head.rstrip(), detail[:-1]
    return term, ""


def split_fields(body: str, raw: Optional[str] = None) -> Tuple[Tuple[str, ...], bool]:
    """Colon fields of a term without prefix and detail; ``=count`` on the last field becomes a field.

    The flag says whether the count came after ``=``. Raises :class:`RequestError` (``part`` the term)
    on an empty field.

    >>> split_fields("gpu:1g.10gb=2")
    (('gpu', '1g.10gb', '2'), True)
    >>> split_fields("gpu:mem=20G")
    (('gpu', 'mem=20G'), False)
    """
    where = body if raw is None else raw
    fields = body.split(":")
    equals = False
    last = fields[-1]
    # `mem=20G` names a memory size (a type); anywhere else `=` introduces the count (TRES spelling).
    if "=" in last and not last.lower().startswith("mem="):
        head, _, tail = last.partition("=")
        fields = fields[:-1] + [head, tail]
        equals = True
    if any(not f for f in fields):
        raise RequestError(f"gres term {where!r} has an empty field", part=where)
    return tuple(fields), equals


def is_count(text: str) -> bool:
    """A count as Slurm prints it: digits with an optional ``k``/``m``/``g``/``t`` suffix.

    >>> [is_count(t) for t in ("4", "2k", "1g.10gb", "-1")]
    [True, True, False, False]
    """
    return bool(_COUNT.match(text))


def parse_count(text: str, raw: str, *, suffixes: bool = True, minimum: int = 0) -> int:
    """The value of count ``text`` of term or list ``raw``; a suffix multiplies by 1024 per step.

    Raises :class:`RequestError` with ``part`` the count when it is no count, carries a suffix that
    ``suffixes`` forbids, or is below ``minimum``.

    >>> parse_count("3", "gres/mig=3"), parse_count("1m", "shard:1m")
    (3, 1048576)
    """
    m = _COUNT.match(text)
    if not m or (m.group(2) and not suffixes):
        what = "a whole number" if suffixes else "a positive integer"
        raise RequestError(f"count {text!r} in {raw!r} is not {what}", part=text)
    value = int(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value < minimum:
        raise RequestError(f"count {text!r} in {raw!r} must be at least {minimum}", part=text)
    return value


def parse_term(
    term: str,
    *,
    looks_like_count: Callable[[str], bool] = is_count,
    bare_type: Optional[Callable[[str], bool]] = None,
    default_name: str = "gpu",
) -> GresTerm:
    """``term`` split into name, type, count and detail (see the module docstring for the grammar).

    ``looks_like_count`` decides whether a lone field after the name is a count or a type;
    ``bare_type`` accepts a first field that is a type written without its gres name (``1g.10gb:2``,
    name ``default_name``). Raises :class:`RequestError` with ``part`` the term on an empty field or
    more than three fields.

    >>> parse_term("gres:gpu:3g.40gb:1")
    GresTerm(name='gpu', type='3g.40gb', count='1', detail='', prefixed=True, raw='gres:gpu:3g.40gb:1')
    >>> parse_term("gres/shard:2k").count, parse_term("gpu:1g.10gb").type
    ('2k', '1g.10gb')
    >>> parse_term("1g.10gb:2", bare_type=lambda f: "." in f)
    GresTerm(name='gpu', type='1g.10gb', count='2', detail='', prefixed=False, raw='1g.10gb:2')
    """
    raw = term.strip()
    head, detail = split_detail(raw)
    body, prefixed = strip_prefix(head)
    fields, equals = split_fields(body, raw)
    if bare_type is not None and bare_type(fields[0]):
        name, rest = default_name, fields
    else:
        name, rest = fields[0], fields[1:]
    if len(rest) > 2:
        raise RequestError(f"gres term {raw!r} has too many fields", part=raw)
    gtype: Optional[str] = None
    count: Optional[str] = None
    if len(rest) == 2:
        gtype, count = rest
    elif len(rest) == 1:
        if equals or looks_like_count(rest[0]):
            count = rest[0]
        else:
            gtype = rest[0]
    cnt = _CNT.match(detail.strip())
    if cnt:  # count-only gres detail, as 22.05 prints an allocation: mig(CNT:4)
        count = cnt.group(1)
    return GresTerm(name, gtype, count, detail, prefixed, raw)
