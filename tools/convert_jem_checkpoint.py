"""Converts the JEM reference's PyTorch checkpoint into an ebmkit workdir.

  python tools/convert_jem_checkpoint.py --checkpoint=CIFAR10_MODEL.pt \\
      --workdir=ebmkit_runs/jem_cifar10_reference [--gin_file=jem_cifar10.gin]

The same as `python -m ebmkit.convert` (which works from an installed wheel
too); `--help` lists the flags. torch is not needed.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":
  from ebmkit import convert  # pylint: disable=g-import-not-at-top
  convert.main(sys.argv[1:])
