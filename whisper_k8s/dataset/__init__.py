"""Common Voice 11 data: the folder layout (one source for writer and reader) and the synthetic generator."""
