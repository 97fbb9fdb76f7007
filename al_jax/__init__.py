"""al_jax: pool-based active learning for image classification in JAX/Flax.

Importing the package changes nothing global. Entry points that run on the CPU call
`configure_cpu()` before JAX starts its backend.
"""

import importlib.util
import os

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 runs convolutions through its YNN (XNNPACK) library fusion,
# which is slower here than its Eigen kernels when a convolution sits between batch-norm
# statistics and a gradient: training the paper's CNNs goes from about 1,200 to 2,000
# images/s on 2 cores with this fusion turned off for convolutions (docs/BENCHMARKS.md).
CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def configure_cpu() -> bool:
  """Adds CPU_XLA_FLAG to XLA_FLAGS on a CPU-only jaxlib 0.10 install; True if it did.

  Leaves XLA alone when an accelerator plugin is installed, when XLA_FLAGS already sets
  that option, or when AL_JAX_XLA_TUNING=0. Call it before the first JAX computation:
  XLA reads its flags once, when the backend starts.
  """
  if os.environ.get("AL_JAX_XLA_TUNING", "1") == "0":
    return False
  if any(importlib.util.find_spec(p) for p in
         ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")):
    return False
  try:
    from importlib.metadata import version
    major_minor = tuple(int(v) for v in version("jaxlib").split(".")[:2])
  except Exception:  # jaxlib missing or odd version: leave XLA alone
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if major_minor != (0, 10) or "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {CPU_XLA_FLAG}".strip()
  return True
