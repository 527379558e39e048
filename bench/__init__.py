"""Side-by-side benchmark of blockchol: ``python -m bench [--quick] [--suite NAMES]``.

:mod:`.suites` holds the cases (plain data), the implementations and the
registry; :mod:`.harness` the one timing loop, the records and the files;
:mod:`.report` the Markdown and the targets; :mod:`.plots` reads the JSON.
"""
