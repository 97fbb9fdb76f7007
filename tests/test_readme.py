"""Every Python block of the README runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README).read(), flags=re.S)


def test_the_readme_has_python_blocks():
  assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
  exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_the_own_model_example_is_the_readme_block():
  """examples/own_model.py is the README's "Your own model" block after its docstring."""
  example = open(os.path.join(os.path.dirname(README), "examples", "own_model.py")).read()
  body = example.split('"""', 2)[2].lstrip("\n")
  assert body in BLOCKS and 'register_model("my_cnn"' in body
