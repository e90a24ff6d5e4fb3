"""Wire protocols: shape and type conversion only (no torch, no HTTP framework)."""
