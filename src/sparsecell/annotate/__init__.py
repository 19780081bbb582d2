"""Annotate next: where the pathologist should click (``sparsecell suggest``)."""
