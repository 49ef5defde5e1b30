"""Live progress of a running job: where it is, how fast, when it ends, and whether it is stalled.

The trainer writes three things on the outputs volume (names in :mod:`.layout`): ``metrics.jsonl`` (one line
per iteration, plus ``start`` and ``checkpoint`` events), ``progress/run.json`` (rank 0: attempts and the
latest complete checkpoint) and ``progress/rank-NNNNN.json`` (one heartbeat per rank). Reading them:

- :mod:`.probe` reads the tail of metrics.jsonl and the small files into one JSON snapshot; it is stdlib only
  and runs where the outputs are (``python -m whisper_k8s.progress.probe /outputs``), so a backend that can
  only run a command there (Kubernetes exec) gets everything in one round trip.
- :mod:`.source` is what a backend provides: a :class:`~.source.ProgressSource` that returns that snapshot.
- :mod:`.summary` turns a snapshot into a :class:`~.summary.Progress` (rates, trend, ETA), :mod:`.stall`
  decides whether the job is stalled and which rank is behind, :mod:`.render` prints it and builds the
  ``status -o json|yaml`` document, :mod:`.watch` refreshes it in place.

Kept free of imports so that the probe starts fast in a pod.
"""
