"""What a dataset claim holds, and which of its folders a job trains on (``submit --dataset NAME``).

A dataset claim, mounted at ``/data`` in every pod, is laid out as::

    common_voice_11_0/            the audio tree (dataset upload / dataset fetch), with its transfer manifest
    prepared/<preset>-<langs>-<task>/   dataset prepare --claim output (e.g. prepared/large-v3-hi-transcribe)

Its catalog is a small JSON object the commands that write the claim keep up to date where the backend keeps
a claim's metadata (a PersistentVolumeClaim annotation, a file beside the local claim folder or the docker
volume's record), so ``submit`` can choose without starting a pod::

    {"audio": {"path": "common_voice_11_0", "held": {"hi": ["train", "test"]}},
     "prepared": {"large-v3-hi-transcribe": {"path": "prepared/large-v3-hi-transcribe", "n_mels": 128,
                                             "n_frames": 3000, "task": "transcribe", "held": {"hi": ["train"]}}}}

``choose_dataset`` prefers prepared features made for the job's model (n_mels, window, task) that hold every
requested language and split, else the audio tree, and says which and why; the preflight init container then
checks the chosen folder for real (processor identity included), and the trainer reads either kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from whisper_k8s.errors import UserError

AUDIO_DIR = "common_voice_11_0"
PREPARED_DIR = "prepared"


@dataclass(frozen=True)
class DatasetChoice:
    path: str  # relative to the claim's root
    kind: str  # "prepared" or "audio"
    reason: str


def prepared_key(preset: str, languages: list[str], task: str = "transcribe") -> str:
    return f"{preset}-{'-'.join(sorted(languages))}-{task}"


def prepared_path(preset: str, languages: list[str], task: str = "transcribe") -> str:
    return f"{PREPARED_DIR}/{prepared_key(preset, languages, task)}"


def audio_entry(tree: dict, path: str = AUDIO_DIR) -> dict:
    """The catalog entry of an audio tree from its check (``TreeReport.to_dict()``)."""
    return {"path": path, "held": tree.get("held", {})}


def prepared_entry(manifest: dict, path: str) -> dict:
    """The catalog entry of a prepared folder from its ``manifest.json``."""
    return {"path": path, "n_mels": manifest["n_mels"], "n_frames": manifest["n_frames"], "task": manifest["task"],
            "held": {lang: sorted(splits) for lang, splits in manifest["languages"].items()}}


def _holds(entry: dict, languages: list[str], split: str) -> bool:
    return all(split in entry.get("held", {}).get(lang, []) for lang in languages)


def choose_dataset(catalog: dict, *, claim: str, preset: str, languages: list[str], split: str,
                   task: str = "transcribe") -> DatasetChoice:
    """Prepared features for this model when the claim has them, else its audio tree; UserError when neither
    holds ``languages``/``split`` (naming what the claim holds and the command that fills it)."""
    from whisper_k8s.dataset.prepare import preset_geometry

    n_mels, n_frames = preset_geometry(preset)
    wanted = f"{','.join(languages)}/{split}"
    for entry in sorted(catalog.get("prepared", {}).values(), key=lambda e: e["path"]):
        if (entry["n_mels"], entry["n_frames"], entry["task"]) == (n_mels, n_frames, task) and _holds(
                entry, languages, split):
            return DatasetChoice(entry["path"], "prepared", f"prepared features for {preset} ({n_mels} mels) "
                                 f"holding {wanted} on claim {claim}")
    audio = catalog.get("audio")
    if audio and _holds(audio, languages, split):
        hint = (f"python -m whisper_k8s dataset prepare --claim {claim} --lang {','.join(languages)} --split "
                f"{split} --preset {preset}")
        return DatasetChoice(audio["path"], "audio", f"the Common Voice tree on claim {claim} (decoded every epoch; "
                             f"no prepared features for {preset} {wanted}: `{hint}` makes them)")
    holds = "; ".join(f"{e['path']}: {_listing(e)}" for e in ([audio] if audio else [])
                      + list(catalog.get("prepared", {}).values())) or "nothing yet"
    raise UserError(f"claim {claim} holds no {wanted} ({holds}): put the Common Voice tree there first: python -m "
                    f"whisper_k8s dataset upload SRC --claim {claim} (or dataset fetch URL --claim {claim})")


def _listing(entry: dict) -> str:
    return ", ".join(f"{lang}/{'+'.join(splits)}" for lang, splits in sorted(entry.get("held", {}).items())) or "none"
