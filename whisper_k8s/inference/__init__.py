"""Inference and evaluation: audio loading (``audio``), prompts and special tokens (``tokens``), batched
decoding with Whisper's token rules (``decoding``), long-form transcription with timestamps (``longform``),
the user-facing API (``transcribe``), transcript files (``output``), Whisper-normalised WER/CER (``metrics``)
and Common Voice evaluation (``evaluate``)."""
