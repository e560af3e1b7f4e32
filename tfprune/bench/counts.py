"""Parameters, non-zero parameters and MACs per layer (filled in by the shrinking work)."""
