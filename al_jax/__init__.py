"""al_jax: pool-based active learning for image classification in JAX/Flax."""

__version__ = "0.1.0"
