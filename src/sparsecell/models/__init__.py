"""Detectors: ViG (models/vig.py blocks, models/detector.py networks) and a small U-Net."""

from .detector import MODEL_SIZES, DetectorOutput, UNetDetector, ViGDetector, build_model, vig_s, vig_ti

__all__ = ["MODEL_SIZES", "DetectorOutput", "UNetDetector", "ViGDetector", "build_model", "vig_s", "vig_ti"]
