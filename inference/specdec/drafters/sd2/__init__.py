"""SD2 drafting: ``SD2Drafter`` (the engine's drafter) and ``load_sd2_drafter`` (from a checkpoint).
Its draft (``drafters.sorted_draft``), tree proposers and budgets (``specdec.tree``) are shared."""
from .chain import ChainProposer
from .drafter import SD2Drafter, load_sd2_drafter

__all__ = ["ChainProposer", "SD2Drafter", "load_sd2_drafter"]
