"""The HTTP edge: routes, the error table, request ids, composition (no torch imported here)."""
