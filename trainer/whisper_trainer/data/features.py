"""Batched Whisper log-mel features, numerically equal to ``transformers.WhisperFeatureExtractor``.

The extractor pads every clip to 30 s and transforms all 3000 frames, although a Common Voice clip is ~5 s:
most of that work turns zeros into the constant log10(1e-10). Here each clip is transformed only up to the
frame where its signal ends (plus the STFT window), the frames of all clips of a batch share one sparse mel
product and one log, and the remaining frames are filled with the value all-zero frames give, so the result
equals the full computation while costing about clip length / 30 s of it. The steps
and their order follow the extractor: Hann-windowed 400-point STFT, hop 160, last frame dropped, power, slaney
mel filters, log10 of max(x, 1e-10), floor at (per-sample max - 8), then (x + 4) / 4.

The frame count is the model's (2 x max_source_positions; 3000 = 30 s for every Whisper size): a model built
with a shorter window gets the first ``n_frames`` frames, which equal ``WhisperFeatureExtractor(chunk_length=
n_frames / 100)``: for a clip inside the window, the frames past it see only zeros either way and the peak
that sets the floor is the clip's own (zeros give the lowest value).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np

from whisper_k8s.errors import UserError
from whisper_trainer.data.audio import MAX_SAMPLES

N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = MAX_SAMPLES // HOP_LENGTH  # 3000
LOG_FLOOR = -10.0  # log10(1e-10): what a frame of pure zeros gives


def mel_filters(processor_dir: str, n_mels: int) -> np.ndarray:
    """The (201, n_mels) slaney filter bank of the processor's feature extractor, built for ``n_mels`` bins.

    ``n_mels`` comes from the model (num_mel_bins), so a 128-bin processor can feed an 80-bin model and the
    features still match what ``WhisperFeatureExtractor(feature_size=n_mels)`` gives.
    """
    from transformers import WhisperFeatureExtractor

    try:
        extractor = WhisperFeatureExtractor.from_pretrained(processor_dir, feature_size=n_mels)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot read the feature extractor settings of processor {processor_dir} ({err}): "
            "processor_name_or_path must be a Hugging Face Whisper processor folder"
        ) from None
    if (extractor.n_fft, extractor.hop_length, extractor.sampling_rate) != (N_FFT, HOP_LENGTH, 16_000):
        raise UserError(
            f"processor {processor_dir} uses n_fft={extractor.n_fft} hop_length={extractor.hop_length} "
            f"sampling_rate={extractor.sampling_rate}; Whisper needs 400/160/16000"
        )
    return np.asarray(extractor.mel_filters, dtype=np.float32)


class LogMel:
    """Callable: 16 kHz float32 waveforms (each within the window) -> FloatTensor[B, n_mels, n_frames].

    ``compact`` gives the same features without the constant tail (what ``dataset prepare`` stores);
    ``assemble`` turns compact features back into the batch, so both paths share one last step.
    """

    def __init__(self, filters: np.ndarray, n_frames: int = N_FRAMES):
        import torch

        dense = torch.from_numpy(np.ascontiguousarray(filters.T, dtype=np.float32))  # [n_mels, 201]
        # Each slaney filter covers a few neighbouring bins (~2 % of the matrix is non-zero): a sparse product
        # does the same sums in a fraction of the time of the dense one.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self.filters = dense.to_sparse_csr()
        self.n_mels = dense.shape[0]
        self.window = torch.hann_window(N_FFT)
        self.n_frames = n_frames

    def __call__(self, waveforms: list[np.ndarray]):
        compact = self.compact(waveforms)
        return assemble(compact.frames.split(compact.lengths, dim=1), compact.pad_values, self.n_frames)

    def compact(self, waveforms: list[np.ndarray]) -> CompactFeatures:
        """Every clip's signal-carrying frames side by side, final values, plus each clip's tail value."""
        import torch

        lengths = [signal_frames(waveform.shape[0], self.n_frames) for waveform in waveforms]
        # One FFT, one power, one sparse mel product and one log over all clips' frames: [sum T, 400] windowed
        # frames -> [sum T, 201] power -> [n_mels, sum T] log-mel. Fewer, larger operations than one STFT per clip.
        windowed = torch.empty(sum(lengths), N_FFT)
        for waveform, rows in zip(waveforms, windowed.split(lengths), strict=True):
            frames = torch.from_numpy(centred_signal(waveform, rows.shape[0], self.n_frames)).unfold(0, N_FFT, HOP_LENGTH)
            torch.mul(frames, self.window, out=rows)
        parts = torch.view_as_real(torch.fft.rfft(windowed, dim=1))
        power = parts[..., 0].square().add_(parts[..., 1].square())  # |X|^2 without complex abs (a sqrt)
        log_spec = (self.filters @ power.T.contiguous()).clamp_(min=1e-10).log10_()
        peaks = torch.stack([clip.max() for clip in log_spec.split(lengths, dim=1)])
        # Frames past the signal are all-zero (log10(1e-10)) and take part in the peak too.
        has_tail = torch.tensor([length < self.n_frames for length in lengths])
        floors = torch.where(has_tail, peaks.clamp(min=LOG_FLOOR), peaks) - 8.0
        column_floors = torch.repeat_interleave(floors, torch.tensor(lengths))
        features = torch.maximum(log_spec, column_floors, out=log_spec).add_(4.0).div_(4.0)
        pad_values = (floors.clamp(min=LOG_FLOOR) + 4.0) / 4.0
        return CompactFeatures(features, lengths, pad_values.tolist())


class CompactFeatures(NamedTuple):
    """A batch's log-mel frames that carry signal, [n_mels, sum of lengths], and the constant of each tail."""

    frames: Any  # FloatTensor [n_mels, sum(lengths)], final (normalised) values
    lengths: list[int]
    pad_values: list[float]  # float32 values: every frame past a clip's length equals it in every mel bin

    def as_batch(self) -> dict:
        """The batch entries of a compact batch (``build_dataloader(compact_features=True)``)."""
        import torch

        return {"input_frames": self.frames, "frame_lengths": torch.tensor(self.lengths),
                "pad_values": torch.tensor(self.pad_values, dtype=torch.float32)}


def expand_features(batch: dict, n_frames: int, device=None) -> dict:
    """Turn a compact batch into the usual ``input_features`` [B, n_mels, n_frames], on ``device``.

    Built on the accelerator, the padded batch costs the data workers nothing (writing its 12 MB is a fifth to
    a quarter of the log-mel time on a CPU core) and the host-to-device copy carries ~6 s / 30 s of the bytes.
    """
    frames = batch.pop("input_frames")
    if device is not None:
        frames = frames.to(device, non_blocking=True)
    lengths = batch.pop("frame_lengths").tolist()
    pad_values = batch.pop("pad_values").tolist()
    batch["input_features"] = assemble(frames.split(lengths, dim=1), pad_values, n_frames, device=device)
    return batch


def assemble(clip_frames, pad_values: list[float], n_frames: int, device=None):
    """FloatTensor[B, n_mels, n_frames] from each clip's frames [n_mels, T] and its tail value.

    In a dataloader worker the batch is written straight into shared memory: torch would otherwise copy the
    12 MB batch there when handing it to the training process.
    """
    import torch
    from torch.utils.data import get_worker_info

    n_mels = clip_frames[0].shape[0]
    shape = (len(clip_frames), n_mels, n_frames)
    if device is not None or get_worker_info() is None:
        features = torch.empty(shape, device=device)
    else:
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
        features = torch.empty(0).set_(storage, 0, shape)
    for row, (frames, pad_value) in enumerate(zip(clip_frames, pad_values, strict=True)):
        length = frames.shape[1]
        features[row, :, :length] = frames
        features[row, :, length:].fill_(pad_value)
    return features


def centred_signal(waveform: np.ndarray, frames: int, n_frames: int = N_FRAMES) -> np.ndarray:
    """The samples the first ``frames`` STFT frames read: the clip zero-padded to the window, reflect-padded by
    half an FFT at both ends as torch.stft(center=True) and the extractor's 30 s computation do. Padding only
    to one window past the last computed frame keeps the right-hand reflection inside zeros, as in the 30 s
    computation, unless the clip reaches the window's end (then the signal is the whole window anyway)."""
    length = min(n_frames * HOP_LENGTH, (frames - 1) * HOP_LENGTH + N_FFT + 1)
    signal = np.zeros(length, dtype=np.float32)
    used = min(waveform.shape[0], length)
    signal[:used] = waveform[:used]
    return np.pad(signal, N_FFT // 2, mode="reflect")[: (frames - 1) * HOP_LENGTH + N_FFT]


def signal_frames(num_samples: int, n_frames: int = N_FRAMES) -> int:
    """Frames whose window reaches into a clip of ``num_samples`` samples; later ones see only zero padding."""
    return min(n_frames, -(-(num_samples + N_FFT // 2) // HOP_LENGTH))
