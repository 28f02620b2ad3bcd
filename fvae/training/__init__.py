"""Training: the DDP loop, checkpoints, the run lock, ranks, precision, the run log, ``fvae.train``."""
