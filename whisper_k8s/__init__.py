"""whisper-k8s: a Kubernetes deployment kit for Whisper pretraining in MindSpeed-MM formats."""

__version__ = "0.1.0"
