"""Model families, the registry that resolves ids, and the manager that loads them."""
