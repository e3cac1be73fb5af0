"""Quick ablations that chose settings on the validation split (see training/EXPERIMENTS.md)."""
