"""Model inspection, conversion and verification."""
