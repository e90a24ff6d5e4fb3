"""imagine: a self-hosted text-to-image server that speaks the Hugging Face Inference API."""

__version__ = "0.1.0"
