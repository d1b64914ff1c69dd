"""What training (``sd2train``) and inference (``specdec``, ``evaluation``) share: where the
repository's models and data live (``sd2.paths``) and what makes a checkpoint an SD2 draft
(``sd2.draft_spec``). Nothing here imports torch or either side."""
