"""SD2 training: sorted drafts (SoFT/SFT) from a target's first layers, FastChat-style."""
