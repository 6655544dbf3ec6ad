import sys

from . import openmp  # noqa: F401 - sets the OpenMP wait policy before torch loads
from .cli import main

sys.exit(main())
