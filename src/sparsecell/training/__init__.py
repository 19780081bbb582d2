"""Training: the sparse annotations and random crops a model learns from
(:mod:`~sparsecell.training.crops`, :mod:`~sparsecell.training.targets`), the
Lightning loop (:mod:`~sparsecell.training.loop`), progressive pseudo-labels
(:mod:`~sparsecell.training.pseudo`) and the energy maps of figures
(:mod:`~sparsecell.training.energy`).
"""
