"""Python-based CPU backends for servers that lack Triton's native ones (loaded by the Python
backend stub as ``<backend-dir>/<name>/model.py``)."""
