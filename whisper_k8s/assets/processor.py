"""Build a Hugging Face Whisper processor folder offline from the vocabulary the openai-whisper sdist ships.

Pods and tests cannot reach the Hub, yet the trainer, the converter and inference all need the exact Whisper
tokenizer (ids must match the pretrained embedding rows) and the feature-extractor settings. The openai-whisper
package carries the real byte-level BPE ranks (``multilingual.tiktoken``, ``gpt2.tiktoken``); the BPE merges are
reconstructed from those ranks with transformers' tiktoken converter, and the special tokens are appended in
Whisper's own order, so every id equals the real one (``<|endoftext|>`` 50257 ... ``<|30.00|>`` 51865 for
large-v3).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from whisper_k8s.atomic import atomic_directory
from whisper_k8s.errors import UserError

# Whisper's language codes in token order (the order of openai-whisper's LANGUAGES table; large-v3 adds yue).
LANGUAGE_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt "
    "la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc "
    "ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()

TASK_TOKENS = ("<|translate|>", "<|transcribe|>")
CONTROL_TOKENS = ("<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>")
TIMESTAMP_COUNT = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
MARKER_FILE = "whisper_k8s_assets.json"
MARKER_LAYOUT = 3  # bump when the folder's content changes, so older folders of ours are rebuilt


@dataclass(frozen=True)
class Variant:
    """One Whisper tokenizer family: which rank file, how many language tokens, how many mel bins."""

    name: str
    rank_file: str
    num_languages: int
    num_mel_bins: int


VARIANTS = {
    "large-v3": Variant("large-v3", "multilingual.tiktoken", num_languages=100, num_mel_bins=128),
    "v2": Variant("v2", "multilingual.tiktoken", num_languages=99, num_mel_bins=80),
    "en": Variant("en", "gpt2.tiktoken", num_languages=99, num_mel_bins=80),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown processor variant {name!r}: choose one of {', '.join(VARIANTS)}") from None


def whisper_assets_dir() -> Path:
    """The ``whisper/assets`` folder of the installed openai-whisper package, found without importing it
    (its runtime dependencies are deliberately not installed)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the openai-whisper package is not installed, so its vocabulary files are missing: "
            "run `pip install --no-deps openai-whisper` (or `make setup`)"
        )
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not assets.is_dir():
        raise UserError(
            f"{assets} is missing: reinstall openai-whisper (`pip install --no-deps openai-whisper`)"
        )
    return assets


def english_spelling_file() -> Path:
    """Whisper's British -> American spelling map, which Hugging Face ships as ``normalizer.json``."""
    return whisper_assets_dir().parent / "normalizers" / "english.json"


def read_bpe_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken rank file: one ``<base64 token> <rank>`` pair per line."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def special_tokens(variant: str = "large-v3") -> list[str]:
    """Whisper's special tokens in id order, starting right after the BPE ranks (timestamps excluded)."""
    spec = get_variant(variant)
    languages = [f"<|{code}|>" for code in LANGUAGE_CODES[: spec.num_languages]]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, *TASK_TOKENS, *CONTROL_TOKENS]


def timestamp_tokens() -> list[str]:
    return [f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMP_COUNT)]


def _base_vocab_size(variant: str) -> int:
    # Every rank file lists ranks 0..n-1, so its line count is the first special id (50257 or 50256).
    path = whisper_assets_dir() / get_variant(variant).rank_file
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def token_ids(variant: str = "large-v3") -> dict[str, int]:
    """Every special and timestamp token with its id, computed without building the tokenizer."""
    first = _base_vocab_size(variant)
    tokens = special_tokens(variant) + timestamp_tokens()
    return {token: first + offset for offset, token in enumerate(tokens)}


def lang_to_id(variant: str = "large-v3") -> dict[str, int]:
    """``{"<|en|>": 50259, ...}``: the map a generation_config.json carries as ``lang_to_id``."""
    ids = token_ids(variant)
    codes = LANGUAGE_CODES[: get_variant(variant).num_languages]
    return {f"<|{code}|>": ids[f"<|{code}|>"] for code in codes}


def special_ids(variant: str = "large-v3") -> dict[str, int]:
    """The named ids a generation config and the trainer's label builder need."""
    ids = token_ids(variant)
    return {
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "translate_token_id": ids["<|translate|>"],
        "transcribe_token_id": ids["<|transcribe|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "no_speech_token_id": ids["<|nospeech|>"],
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "timestamp_begin": ids["<|0.00|>"],
        "vocab_size": vocab_size(variant),
    }


def generation_config_fields(variant: str = "large-v3") -> dict:
    """The tokenizer-derived fields of a Whisper ``generation_config.json`` (model-specific ones such as
    ``alignment_heads`` and ``suppress_tokens`` are the converter's business)."""
    ids = special_ids(variant)
    fields = {
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "decoder_start_token_id": ids["decoder_start_token_id"],
        "no_timestamps_token_id": ids["no_timestamps_token_id"],
        "prev_sot_token_id": ids["prev_sot_token_id"],
        "begin_suppress_tokens": [220, ids["eos_token_id"]],  # " " and <|endoftext|> never open a transcript
        "is_multilingual": variant != "en",
        "max_initial_timestamp_index": 50,
        "max_length": 448,
    }
    if variant != "en":  # English-only models take no language or task token
        fields["lang_to_id"] = lang_to_id(variant)
        fields["task_to_id"] = {
            "translate": ids["translate_token_id"],
            "transcribe": ids["transcribe_token_id"],
        }
    return fields


def vocab_size(variant: str = "large-v3") -> int:
    return _base_vocab_size(variant) + len(special_tokens(variant)) + TIMESTAMP_COUNT


def build_tokenizer(variant: str = "large-v3"):
    """A ``transformers.WhisperTokenizer`` with the real vocabulary, merges and special tokens."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _LocalRankConverter(TikTokenConverter):
        """transformers' converter, reading the rank file itself instead of through the tiktoken package."""

        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_bpe_ranks(Path(tiktoken_url))

    rank_file = whisper_assets_dir() / get_variant(variant).rank_file
    vocab, merges = _LocalRankConverter().extract_vocab_merges_from_model(str(rank_file))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, normalizer_file=str(english_spelling_file()))
    specials = [AddedToken(t, special=True, normalized=False) for t in special_tokens(variant)]
    tokenizer.add_special_tokens({"extra_special_tokens": specials})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamp_tokens()])
    tokenizer.pad_token = "<|endoftext|>"  # as in OpenAI's published tokenizers: batches pad with <|endoftext|>
    tokenizer.set_prefix_tokens()  # refresh the post-processor now that <|startoftranscript|> exists
    _check_ids(tokenizer, variant)
    return tokenizer


def _check_ids(tokenizer, variant: str) -> None:
    expected = token_ids(variant)
    found = dict(zip(expected, tokenizer.convert_tokens_to_ids(list(expected)), strict=True))
    wrong = {token: (found[token], want) for token, want in expected.items() if found[token] != want}
    if wrong or len(tokenizer) != vocab_size(variant):
        raise RuntimeError(
            f"the rebuilt {variant} tokenizer does not match Whisper's ids (token: found, expected): "
            f"{dict(list(wrong.items())[:5])}, size {len(tokenizer)} vs {vocab_size(variant)}"
        )


def build_processor(variant: str = "large-v3"):
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    feature_extractor = WhisperFeatureExtractor(feature_size=get_variant(variant).num_mel_bins)
    return WhisperProcessor(feature_extractor=feature_extractor, tokenizer=build_tokenizer(variant))


def _provenance(variant: str) -> dict:
    rank_file = whisper_assets_dir() / get_variant(variant).rank_file
    return {
        "layout": MARKER_LAYOUT,
        "variant": variant,
        "rank_file": rank_file.name,
        "rank_file_sha256": hashlib.sha256(rank_file.read_bytes()).hexdigest(),
        "vocab_size": vocab_size(variant),
        "num_mel_bins": get_variant(variant).num_mel_bins,
    }


def _written_by_us(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _also_readable_by_transformers_4(folder: Path, processor) -> None:
    """Make the folder load with transformers 4.x too (MindSpeed-MM's stack), not only with the 5.x that wrote it.

    4.x reads the feature extractor from ``preprocessor_config.json`` and expects the special-token list under
    ``additional_special_tokens`` (its ``extra_special_tokens`` is a dict); 5.x accepts both spellings.
    """
    processor.feature_extractor.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_processor(out_dir: Path | str, variant: str = "large-v3", *, overwrite: bool = False) -> Path:
    """Write a folder that ``WhisperProcessor.from_pretrained(out_dir)`` loads with no network.

    Idempotent: a folder this function already wrote for the same variant and vocabulary is left as it is; one
    it wrote for another variant or an older layout is replaced. Any other non-empty folder is refused unless
    ``overwrite``. The folder appears atomically.
    """
    out_dir = Path(out_dir)
    provenance = _provenance(variant)
    previous = _written_by_us(out_dir)
    if previous == provenance:
        return out_dir
    replace = overwrite or previous is not None
    with atomic_directory(out_dir, overwrite=replace, what="processor folder") as staging:
        fill_processor_folder(staging, variant)
    return out_dir


def fill_processor_folder(folder: Path, variant: str = "large-v3"):
    """Write the processor files of ``variant`` into the existing ``folder`` (a model folder may share it);
    returns the processor."""
    processor = build_processor(variant)
    processor.save_pretrained(folder)
    _also_readable_by_transformers_4(folder, processor)
    # The tokenizer reloads the spelling map from here (English WER normalisation needs it).
    shutil.copyfile(english_spelling_file(), folder / "normalizer.json")
    (folder / MARKER_FILE).write_text(json.dumps(_provenance(variant), indent=2) + "\n")
    return processor
