"""Progressive Growing of GANs (Karras et al., ICLR 2018) in JAX/Flax."""
