"""Whole slides: the reader (:mod:`~sparsecell.slides.reader`, tiffslide or OpenSlide),
the tissue mask (:mod:`~sparsecell.slides.tissue`), the streaming pipeline that runs a
model over a slide's tiles and writes cells, QuPath detections and the report
(:mod:`~sparsecell.slides.pipeline`), and the Ki-67 counts (:mod:`~sparsecell.slides.ki67`).
"""
