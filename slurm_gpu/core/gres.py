"""The gres grammar shared by what users write and what Slurm prints.

>>> split_outside("gpu:1g.10gb:2(IDX:0,2),mig:4")
['gpu:1g.10gb:2(IDX:0,2)', 'mig:4']
"""

from __future__ import annotations

from typing import List

__all__ = ["split_outside"]


def split_outside(text: str, sep: str = ",", brackets: str = "()") -> List[str]:
    """Split on ``sep`` outside ``brackets`` (``gpu:2(IDX:0,2)``, ``n[1,3]``); pieces as they are."""
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
