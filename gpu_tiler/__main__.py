"""``python -m gpu_tiler`` runs the command line."""
import sys

from gpu_tiler.cli import main

sys.exit(main())
