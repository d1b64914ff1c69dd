"""Adaptive chain length shared by chain drafters (SD2 chain, SpS).

Hugging Face assisted generation's heuristic, which the original SD2 and SpS baselines inherit:
+2 after a round where every drafted token was accepted, -1 otherwise, within [1, maximum].
"""


class AdaptiveDraftLength:
    def __init__(self, start: int = 5, maximum: int = 20):
        if not 1 <= start <= maximum:
            raise ValueError(f"need 1 <= initial draft length ({start}) <= maximum ({maximum})")
        self.start, self.maximum = start, maximum
        self.value = start

    def reset(self) -> None:
        self.value = self.start

    def update(self, drafted: int, accepted: int) -> None:
        """``accepted`` of the ``drafted`` tokens were kept this round."""
        self.value = min(self.value + 2, self.maximum) if accepted >= drafted else max(self.value - 1, 1)
