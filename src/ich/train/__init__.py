"""Training: stage 1 (slice CNN), stage 2 (study sequence model), checkpoints, resume, DDP."""
