"""al_jax: pool-based active learning for image classification in JAX/Flax."""

import importlib.util
import os

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 runs convolutions through its YNN (XNNPACK) library fusion,
# which is slower here than its Eigen kernels when a convolution sits between batch-norm
# statistics and a gradient: training the paper's CNNs goes from about 1,200 to 2,000
# images/s on 2 cores with this fusion turned off for convolutions (docs/BENCHMARKS.md).
# Applied only on a CPU-only install, only when XLA_FLAGS does not set it, and only if
# al_jax is imported before JAX starts its backend; AL_JAX_XLA_TUNING=0 turns it off.
_CPU_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def _tune_xla_cpu() -> None:
  if os.environ.get("AL_JAX_XLA_TUNING", "1") == "0":
    return
  if any(importlib.util.find_spec(p) for p in
         ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")):
    return
  try:
    from importlib.metadata import version
    major_minor = tuple(int(v) for v in version("jaxlib").split(".")[:2])
  except Exception:  # jaxlib missing or odd version: leave XLA alone
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if major_minor == (0, 10) and "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {_CPU_FLAG}".strip()


_tune_xla_cpu()
