"""A suffix automaton over a growing token stream (the prompt, then every accepted token), built
online in O(1) amortised time per token: what SAM decoding (Hu et al., 2024) drafts from.

Each state stands for a set of substrings that end at the same positions (their *endpos* set);
``link`` points to the state of the longest suffix with a larger endpos set. After appending a
token the newest state (``last``) holds the suffixes that occur only at the end, so its link is
the state of the longest suffix of the stream that also occurred earlier: the longest match, at
no search cost. ``first_end`` keeps each state's earliest end position (a clone inherits it from
the state it splits), so what followed the match's first occurrence is read straight from the
stream, as prompt lookup copies after the earliest occurrence of its n-gram.
"""
from __future__ import annotations


class SuffixAutomaton:
    def __init__(self):
        self.tokens: list[int] = []
        # Per state: transitions, suffix link, length of its longest string, earliest end position.
        self.next: list[dict[int, int]] = [{}]
        self.link: list[int] = [-1]
        self.length: list[int] = [0]
        self.first_end: list[int] = [-1]
        self.last = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def _new_state(self, length: int, first_end: int, link: int = -1, next_: dict | None = None) -> int:
        self.next.append(next_ if next_ is not None else {})
        self.link.append(link)
        self.length.append(length)
        self.first_end.append(first_end)
        return len(self.length) - 1

    def extend(self, token: int) -> None:
        """Append one token (the standard online construction)."""
        token = int(token)
        end = len(self.tokens)
        self.tokens.append(token)
        cur = self._new_state(self.length[self.last] + 1, end)
        p = self.last
        while p != -1 and token not in self.next[p]:
            self.next[p][token] = cur
            p = self.link[p]
        if p == -1:
            self.link[cur] = 0
        else:
            q = self.next[p][token]
            if self.length[p] + 1 == self.length[q]:
                self.link[cur] = q
            else:  # split q: the clone keeps the shorter strings (and q's earliest end)
                clone = self._new_state(self.length[p] + 1, self.first_end[q], self.link[q], dict(self.next[q]))
                while p != -1 and self.next[p].get(token) == q:
                    self.next[p][token] = clone
                    p = self.link[p]
                self.link[q] = self.link[cur] = clone
        self.last = cur

    def extend_all(self, tokens) -> None:
        for token in tokens:
            self.extend(token)

    def longest_match(self) -> tuple[int, int]:
        """(length, end) of the longest suffix of the stream that also occurred earlier, ``end``
        being the position of the last token of its earliest occurrence; (0, -1) when even the
        last token is new."""
        state = self.link[self.last] if self.tokens else 0
        if state <= 0:
            return 0, -1
        return self.length[state], self.first_end[state]

    def continuation(self, max_len: int) -> tuple[list[int], int]:
        """(up to ``max_len`` tokens that followed the longest match's earliest occurrence, the
        match length); ([], 0) without a match."""
        length, end = self.longest_match()
        if not length:
            return [], 0
        return self.tokens[end + 1:end + 1 + max_len], length
