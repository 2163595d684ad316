"""Model definitions (T5 in Flax linen)."""
