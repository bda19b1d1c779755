"""Evaluation: the conditioning benchmark (paper Tables II-V) on phantoms and generated CTs."""
