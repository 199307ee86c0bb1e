"""``python -m alignlab``: the CLI; also what ``torchrun --nproc-per-node N -m alignlab sae train ...`` runs."""

import sys

from alignlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
