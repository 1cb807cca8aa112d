"""tritonops: take a trained model to a tuned, validated NVIDIA Triton Inference Server deployment."""

from __future__ import annotations

__version__ = "0.1.0"
