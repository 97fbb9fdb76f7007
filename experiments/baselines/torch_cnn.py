"""PyTorch CPU speed baseline for al_jax's two CNNs (MNIST CNN and Fruits-360 "Net3").

Idiomatic eager PyTorch (optionally torch.compile), measured on synthetic uint8
data held in memory like an active-learning pool.  Prints ONE JSON object.

torch is NOT a dependency of al_jax: run this from a separate virtual
environment (see README.md next to this file).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = {"mnist": (1, 28, 28), "fruits360": (3, 32, 32)}
NUM_CLASSES = 10
TOP_K = 100


def mnist_cnn() -> nn.Sequential:
  return nn.Sequential(
      nn.Conv2d(1, 32, 3), nn.ReLU(), nn.BatchNorm2d(32),
      nn.Conv2d(32, 64, 3), nn.ReLU(), nn.BatchNorm2d(64),
      nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
      nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(128, NUM_CLASSES))


def fruits_net3() -> nn.Sequential:
  return nn.Sequential(
      nn.Conv2d(3, 28, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(28), nn.Dropout(0.2),
      nn.Conv2d(28, 35, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(35), nn.MaxPool2d(2),
      nn.Conv2d(35, 16, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(16), nn.MaxPool2d(2),
      nn.Flatten(), nn.Dropout(0.2),
      nn.Linear(16 * 8 * 8, 100), nn.ReLU(), nn.Dropout(0.3),
      nn.Linear(100, 30), nn.ReLU(), nn.BatchNorm1d(30),
      nn.Linear(30, NUM_CLASSES))


MODELS = {"mnist": mnist_cnn, "fruits360": fruits_net3}


def forward_flops_per_image(model: nn.Module, shape) -> int:
  """Multiply-add FLOPs (2 per MAC) of the convs and dense layers for one image:
  conv 2*H_out*W_out*Cout*Cin*k*k, dense 2*in*out.  Output sizes come from one
  forward pass with hooks; norms, activations, pools and biases are not counted."""
  total = 0

  def hook(module, inputs, output):
    nonlocal total
    if isinstance(module, nn.Conv2d):
      kh, kw = module.kernel_size
      h_out, w_out = output.shape[-2:]
      total += 2 * h_out * w_out * module.out_channels * module.in_channels * kh * kw
    elif isinstance(module, nn.Linear):
      total += 2 * module.in_features * module.out_features

  handles = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
  was_training = model.training
  model.eval()
  with torch.inference_mode():
    model(torch.zeros(1, *shape))
  model.train(was_training)
  for h in handles:
    h.remove()
  return total


def param_counts(model: nn.Module) -> dict:
  trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
  buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
  per_layer = {f"{name}:{type(m).__name__}": sum(p.numel() for p in m.parameters(recurse=False))
               for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
  return {"trainable_params": trainable, "bn_running_stats": buffers, "per_layer": per_layer}


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
  a, b = torch.randn(n, n), torch.randn(n, n)
  out = torch.empty(n, n)
  torch.mm(a, b, out=out)  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    torch.mm(a, b, out=out)
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", choices=sorted(MODELS), default="mnist")
  p.add_argument("--train_batch", type=int, default=None, help="default 128 mnist / 64 fruits360")
  p.add_argument("--score_batch", type=int, default=1000)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--steps", type=int, default=20, help="train steps per repeat")
  p.add_argument("--warmup", type=int, default=2, help="untimed train steps / score chunks first")
  p.add_argument("--score_images", type=int, default=10000, help="pool images scored per repeat")
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile (inductor; needs a C++ compiler, no extra packages)")
  p.add_argument("--check", action="store_true", help="print parameter counts and FLOPs, then exit")
  args = p.parse_args(argv)
  if args.train_batch is None:
    args.train_batch = 128 if args.dataset == "mnist" else 64

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  shape = SHAPES[args.dataset]
  model = MODELS[args.dataset]()
  flops = forward_flops_per_image(model, shape)

  if args.check:
    counts = {name: {**param_counts(build()), "forward_flops_per_image":
                     forward_flops_per_image(build(), SHAPES[name])}
              for name, build in MODELS.items()}
    # Same itemization as al_jax's tests/test_models_training.py (BN: scale + bias per channel).
    expected = {"mnist": 320 + 18496 + 2 * (32 + 64) + (9216 * 128 + 128) + 129 * NUM_CLASSES,
                "fruits360": 784 + 8855 + 5056 + 2 * (28 + 35 + 16 + 30) + (1024 * 100 + 100)
                             + (100 * 30 + 30) + 31 * NUM_CLASSES}
    for name, want in expected.items():
      counts[name]["expected_trainable_params"] = want
      assert counts[name]["trainable_params"] == want, (name, counts[name]["trainable_params"], want)
    print(json.dumps({"framework": "pytorch", "torch_version": torch.__version__, **counts}, indent=1))
    return 0

  # The pool: synthetic uint8 images and labels held in memory.
  pool_size = max(args.score_images, args.train_batch)
  gen = torch.Generator().manual_seed(0)
  pool_x = torch.randint(0, 256, (pool_size, *shape), dtype=torch.uint8, generator=gen)
  pool_y = torch.randint(0, NUM_CLASSES, (pool_size,), generator=gen)
  mean = torch.full((1, shape[0], 1, 1), 0.5)
  std = torch.full((1, shape[0], 1, 1), 0.25)

  def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    return (x_uint8.float().div_(255.0) - mean) / std

  net = model
  if args.compile:
    try:
      net = torch.compile(model)
    except Exception as e:  # noqa: BLE001
      print(f"error: torch.compile is not usable here: {type(e).__name__}: {e}", file=sys.stderr)
      return 2
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def train_step(idx: torch.Tensor) -> None:
    x, y = normalize(pool_x[idx]), pool_y[idx]
    loss = F.cross_entropy(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  def score_pool(n: int, chunks=None) -> torch.Tensor:
    scores = torch.empty(n)
    for start in (chunks if chunks is not None else range(0, n, args.score_batch)):
      x = normalize(pool_x[start:start + args.score_batch])
      probs = F.softmax(net(x), dim=1)
      scores[start:start + len(x)] = torch.special.entr(probs).sum(dim=1)  # entr(0) = 0
    return torch.topk(scores, k=min(TOP_K, n)).indices

  def run_compiled_safely(fn, *a):
    try:
      return fn(*a)
    except Exception as e:  # noqa: BLE001
      if not args.compile:
        raise
      print(f"error: torch.compile failed on first use: {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
      sys.exit(2)

  # Training.
  model.train()
  n_idx = (args.warmup + args.repeats * args.steps) * args.train_batch
  order = torch.randint(0, pool_size, (n_idx,), generator=gen).view(-1, args.train_batch)
  for i in range(args.warmup):
    run_compiled_safely(train_step, order[i])
  train_rates = []
  step = args.warmup
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      train_step(order[step])
      step += 1
    train_rates.append(args.steps * args.train_batch / (time.perf_counter() - t0))

  # Scoring: entropy of the softmax, then the pool's top-k.
  model.eval()
  score_rates = []
  with torch.inference_mode():
    # Untimed warm-up on the first and the (possibly shorter) last chunk, so that
    # torch.compile has seen every chunk shape before the clock starts.
    last = (args.score_images - 1) // args.score_batch * args.score_batch
    warm = sorted({0, last}) if args.warmup > 0 else []
    run_compiled_safely(score_pool, args.score_images, warm)
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      score_pool(args.score_images)
      score_rates.append(args.score_images / (time.perf_counter() - t0))
    mm = matmul_flops_per_s()

  train_ips, score_ips = statistics.median(train_rates), statistics.median(score_rates)
  print(json.dumps({
      "framework": "pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
      "dataset": args.dataset, "train_batch": args.train_batch, "score_batch": args.score_batch,
      "train_images_per_s": train_ips, "score_images_per_s": score_ips,
      "forward_flops_per_image": flops,
      "train_flops_per_s": 3 * flops * train_ips, "score_flops_per_s": flops * score_ips,
      "matmul_flops_per_s": mm, "repeats": args.repeats,
      "steps": args.steps, "score_images": args.score_images, "compile": args.compile}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
