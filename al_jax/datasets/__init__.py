"""Image-classification data sets as uint8 numpy arrays, one module per source.

`load(name, data_dir)` -> `Dataset` (images uint8 [N, H, W, C], labels int32 [N]);
`Dataset.source` says where the arrays came from. The sources, each registered by its
own module (`register(Source(...))`, `al_jax.datasets.base`):

  mnist, fashion_mnist  `idx`: the original IDX files (local, packaged MNIST, download)
  fruits360             `fruits360`: the paper's 52 varieties as 10 categories
  folder                `folder`: the user's own DIR/train/<class>/... images
  npy                   `npy`: .npy files on disk, a pool that streams from the host
  tfds:NAME             `tfds`: any TensorFlow Datasets image-classification set

A local copy is found in `data_dir`, else $AL_JAX_DATA_DIR (the data set's own folder or
a root holding `<root>/<name>/`; `data_dir="sample"` is the small real sample shipped in
`al_jax/sample_data`); a folder that is given but lacks the data is an error, not a
reason to fall back. Decoded arrays are cached as .npz under $AL_JAX_CACHE_DIR
(default ~/.cache/al_jax). A new source is one module that calls `register`.
"""

from al_jax.datasets import base, download, image_files
# Each source registers itself; in this order, the order of `names()`.
from al_jax.datasets import idx
from al_jax.datasets import fruits360
from al_jax.datasets import folder
from al_jax.datasets import npy
from al_jax.datasets import tfds
from al_jax.datasets.base import (CACHE_DIR_ENV, DATA_DIR_ENV, SAMPLE_DIR, DataError,
                                  Dataset, DatasetSpec, Source, atomic_write, cache_dir,
                                  load, names, names_help, own_data_spec, parse_classes, register,
                                  select_classes, source, spec, split_stratified)
