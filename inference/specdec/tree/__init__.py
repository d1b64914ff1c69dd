"""Draft trees, shared by the engine and every tree drafter.

- ``masks``: a tree's depths, children and ancestor masks (the engine's attention over a tree)
- ``proposal``: one round's drafted nodes, as a proposer returns them
- ``row_draft``: the draft a proposer drives (SD2's sorted draft, EAGLE's head, Medusa/Hydra heads)
- ``dynamic``: EAGLE-2-style dynamic trees; ``static``: Medusa-style trees of rank paths
- ``budget``: how many nodes a round drafts (fixed, or from timed verification costs)
"""
from .masks import ancestor_lists, ancestor_mask, children_lists, depths

__all__ = ["ancestor_lists", "ancestor_mask", "children_lists", "depths"]
