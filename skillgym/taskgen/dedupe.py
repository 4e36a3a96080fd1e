"""Near-duplicate removal with MinHash LSH (``datasketch``).

Teachers repeat themselves: the same request reworded, or a persona swapped into an
otherwise identical prompt. Word 3-gram shingles catch both; LSH keeps the check
sub-linear, so thousands of tasks dedupe in well under a second.
"""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH

_WORD_RE = re.compile(r"[a-z0-9]+")


def shingles(text: str, size: int = 3) -> set[str]:
    words = _WORD_RE.findall(text.lower())
    if len(words) < size:
        return {" ".join(words)} if words else {""}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def minhash(text: str, num_perm: int = 128, size: int = 3) -> MinHash:
    mh = MinHash(num_perm=num_perm, seed=1)
    for shingle in shingles(text, size):
        mh.update(shingle.encode("utf-8"))
    return mh


class NearDuplicateFilter:
    """``add(key, text)`` is False (and remembers nothing) when ``text`` is a near duplicate
    (estimated Jaccard >= ``threshold``) of something added before."""

    def __init__(self, threshold: float = 0.7, num_perm: int = 128, shingle_size: int = 3):
        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._hashes: dict[str, MinHash] = {}
        self.rejected: list[tuple[str, str]] = []  # (rejected key, the key it duplicates)

    def duplicate_of(self, text: str) -> str | None:
        mh = minhash(text, self.num_perm, self.shingle_size)
        for other in self._lsh.query(mh):
            # LSH candidates are probable, not certain: confirm with the estimate itself.
            if mh.jaccard(self._hashes[other]) >= self.threshold:
                return other
        return None

    def add(self, key: str, text: str) -> bool:
        if key in self._hashes:
            self.rejected.append((key, key))
            return False
        dup = self.duplicate_of(text)
        if dup is not None:
            self.rejected.append((key, dup))
            return False
        mh = minhash(text, self.num_perm, self.shingle_size)
        self._lsh.insert(key, mh)
        self._hashes[key] = mh
        return True


def dedupe_texts(items: list[tuple[str, str]], threshold: float = 0.7) -> list[str]:
    """Keys of ``(key, text)`` items that survive, first occurrence kept."""
    flt = NearDuplicateFilter(threshold)
    return [key for key, text in items if flt.add(key, text)]
