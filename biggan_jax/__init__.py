"""BigGAN and BigGAN-deep in JAX/Flax (Brock et al., 2019)."""
