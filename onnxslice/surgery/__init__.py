"""Graph edits driven by a slice: masking (zeroing neurons) and restructuring (removing them)."""
