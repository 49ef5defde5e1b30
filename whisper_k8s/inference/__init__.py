"""Inference and evaluation: audio loading (``audio``), transcription in 30 s windows (``transcribe``),
Whisper-normalised WER/CER (``metrics``) and Common Voice evaluation (``evaluate``)."""
