"""The distributed Whisper trainer that runs in the pods (Ascend NPU, NVIDIA GPU or CPU)."""
