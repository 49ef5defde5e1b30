"""Offline Whisper assets (the Hugging Face processor folder) built from locally installed packages."""
