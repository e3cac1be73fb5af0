"""Training side of sharelens: corpus building, the base encoder, fine-tuning, evaluation."""
