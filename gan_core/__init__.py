"""Shared infrastructure for the GAN packages: mesh, data, checkpoints, logging."""
