"""Data: sources -> formats -> tokenize with label masks -> collate."""
