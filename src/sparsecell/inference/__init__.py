"""Inference: a trained model on images. Peaks of heatmaps become cells
(:mod:`~sparsecell.inference.peaks`); large images run tile by tile with exact seams
(:mod:`~sparsecell.inference.tiling`); :class:`~sparsecell.inference.detector.Detector`
runs a checkpoint (:mod:`~sparsecell.inference.checkpoint`) or its ONNX export
(:mod:`~sparsecell.inference.onnx`); :func:`~sparsecell.inference.load.load_detector`
opens either and picks the engine.

>>> from sparsecell.inference.load import load_detector
>>> det = load_detector("runs/demo/pu_sar/checkpoints/best.ckpt")  # doctest: +SKIP
>>> cells = det.predict(image)  # doctest: +SKIP
"""
