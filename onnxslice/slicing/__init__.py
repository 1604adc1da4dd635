"""Selecting critical neurons: the Slice artifact, CKA statistics and selection strategies."""
