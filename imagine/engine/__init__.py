"""The engine: turns GenerationRequests into images. Knows nothing of HTTP."""
