"""Verified, resumable transfers of a folder into a volume (the reverse of ``collect``).

One protocol, three places where a volume lives (the local job store, a docker named volume, a claim behind a
Kubernetes helper pod). The pieces:

- ``manifest``: what the volume holds (size, sha256, source identity of every file the kit wrote), kept in
  ``<dest>/.whisper-k8s/`` together with the files still being written;
- ``store``: writing one file onto the volume under a temporary name, verifying it, renaming it into place;
- ``protocol``: the messages the two sides exchange over a pair of byte streams;
- ``receive``: ``python -m whisper_k8s.transfer.receive DEST`` runs next to the volume and writes what it is sent;
- ``send``: runs on the user's machine, plans what the volume lacks and streams it;
- ``transport``: how the sender reaches the receiver (a local process, ``docker run -i``, a pod's exec stream);
- ``fetch``: ``python -m whisper_k8s.transfer.fetch URL DEST`` pulls from S3-compatible storage or HTTP(S)
  into a volume from inside the cluster, through the same ``store``.
"""
