"""Drafters: each method's way of proposing a ``DraftTree`` (see ``specdec.types.Drafter``)."""
