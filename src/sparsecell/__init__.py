"""sparsecell: tumour-cell detection from sparse point annotations."""

__version__ = "0.1.0"
