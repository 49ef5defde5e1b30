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

import warnings

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
    """Callable: 16 kHz float32 waveforms (each within the window) -> FloatTensor[B, n_mels, n_frames]."""

    def __init__(self, filters: np.ndarray, n_frames: int = N_FRAMES):
        import torch

        dense = torch.from_numpy(np.ascontiguousarray(filters.T, dtype=np.float32))  # [n_mels, 201]
        # Each slaney filter covers a few neighbouring bins (~2 % of the matrix is non-zero): a sparse product
        # does the same sums in a quarter of the time of the dense one.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self.filters = dense.to_sparse_csr()
        self.n_mels = dense.shape[0]
        self.window = torch.hann_window(N_FFT)
        self.n_frames = n_frames

    def __call__(self, waveforms: list[np.ndarray]):
        import torch

        frames = [signal_frames(waveform.shape[0], self.n_frames) for waveform in waveforms]
        powers = [self._power(waveform, computed) for waveform, computed in zip(waveforms, frames, strict=True)]
        # One sparse product and one log over every clip's frames side by side: [201, sum T] -> [n_mels, sum T].
        log_spec = (self.filters @ torch.cat(powers, dim=1)).clamp_(min=1e-10).log10_()
        features = torch.empty(len(waveforms), self.n_mels, self.n_frames)
        for row, clip_log_spec in enumerate(log_spec.split(frames, dim=1)):
            _finish(clip_log_spec, features[row])
        return features

    def _power(self, waveform: np.ndarray, computed: int):
        """|STFT|^2 [201, computed] of one clip, transformed only as far as its signal reaches."""
        import torch

        # The zero padding keeps the STFT's right-hand reflection inside zeros, as in the 30 s computation.
        length = min(self.n_frames * HOP_LENGTH, (computed - 1) * HOP_LENGTH + N_FFT + 1)
        clip = torch.from_numpy(waveform[:length])
        signal = torch.nn.functional.pad(clip, (0, length - clip.shape[0]))
        spectrum = torch.stft(signal, N_FFT, HOP_LENGTH, window=self.window, return_complex=True)[:, :computed]
        parts = torch.view_as_real(spectrum)
        return parts[..., 0].square().add_(parts[..., 1].square())  # |X|^2 without complex abs (a sqrt)


def signal_frames(num_samples: int, n_frames: int = N_FRAMES) -> int:
    """Frames whose window reaches into a clip of ``num_samples`` samples; later ones see only zero padding."""
    return min(n_frames, -(-(num_samples + N_FFT // 2) // HOP_LENGTH))


def _finish(log_spec, out) -> None:
    """Floor at (peak - 8), scale, and fill the frames past the signal with the value zeros give."""
    import torch

    computed = log_spec.shape[1]
    peak = log_spec.max()
    if computed < out.shape[1]:
        peak = peak.clamp(min=LOG_FLOOR)  # the all-zero frames (log10(1e-10)) take part in the peak too
    floor = peak - 8.0
    out[:, :computed] = torch.maximum(log_spec, floor).add_(4.0).div_(4.0)
    out[:, computed:].fill_((floor.clamp(min=LOG_FLOOR) + 4.0) / 4.0)
