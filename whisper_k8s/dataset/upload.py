"""``dataset upload``'s sender side: check SRC is a Common Voice 11 tree here, send it, say what arrived.

The transfer itself is ``whisper_k8s.transfer`` (verified, resumable); the receiver checks the tree on the
volume at the end, so the summary says which languages and splits the claim now holds, or what is missing.
"""

from __future__ import annotations

import os

from whisper_k8s.dataset.tree_check import TreeReport, require_tree
from whisper_k8s.transfer.send import upload
from whisper_k8s.transfer.store import TransferResult, human_size
from whisper_k8s.transfer.transport import Transport


def upload_dataset(src: str | os.PathLike, transport: Transport, dest: str, *, any_folder: bool = False,
                   **options) -> TransferResult:
    """Send ``src`` into ``dest``; without ``any_folder`` a SRC that is not a Common Voice tree is refused
    before anything is sent (UserError naming the fix)."""
    if not any_folder:
        require_tree(src)
    return upload(src, transport, dest, check=None if any_folder else "common-voice", **options)


def summary(result: TransferResult, where: str) -> str:
    """What the command prints: what was sent and kept, and the tree the destination holds now."""
    rate = result.stored_bytes / max(result.seconds, 1e-9)
    lines = [f"sent {result.stored_files} file(s), {human_size(result.stored_bytes)} in {result.seconds:.1f} s "
             f"({human_size(int(rate))}/s); {result.kept_files} already there ({human_size(result.kept_bytes)})"
             + (f"; {result.resumed_files} continued from a partial file" if result.resumed_files else "")]
    if result.tree is not None:
        lines.append(f"{where}: {TreeReport(**result.tree).summary()}")
    return "\n".join(lines)
