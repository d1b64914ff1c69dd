"""SD2 drafting: ``SD2Drafter`` (the engine's drafter) and ``load_sd2_drafter`` (from a checkpoint)."""
from .budget import AUTO_SIZES, AutoTreeBudget, FixedTreeBudget
from .drafter import SD2Drafter, load_sd2_drafter
from .proposers import ChainProposer, Proposal, TreeProposer
from .sorted_draft import SortedDraft

__all__ = ["AUTO_SIZES", "AutoTreeBudget", "ChainProposer", "FixedTreeBudget", "Proposal", "SD2Drafter",
           "SortedDraft", "TreeProposer", "load_sd2_drafter"]
