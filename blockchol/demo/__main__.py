"""``python -m blockchol.demo``: the GP demonstration (see :mod:`blockchol.demo`)."""

from . import main

main()
