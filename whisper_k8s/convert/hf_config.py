"""The model config a conversion needs, and the Hugging Face ``config.json``/``generation_config.json`` it writes.

Where the config comes from, in order: ``--config`` (a MindSpeed-MM model.json or a Hugging Face config.json,
or a folder holding one), the file shipped with the checkpoint, else one of the chart's model presets whose
every key and shape the checkpoint matches. Whisper's generation settings (language and task token ids,
suppressed tokens) come from the offline processor's token table, so ``generate(language=...)`` works on a
model pretrained here.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from whisper_k8s.convert.mapping import as_mapping
from whisper_k8s.errors import UserError
from whisper_k8s.formats.mindspeed import LM_HEAD, TIED_EMBEDDING, check_mm_state, hf_to_mm_key

log = logging.getLogger(__name__)

CONFIG_NAMES = ("config.json", "model.json")
# model.json fields that are not WhisperConfig arguments (MindSpeed-MM bookkeeping).
_MM_ONLY = ("model_id", "ckpt_path")
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32",
               "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}
# Processor variants by vocabulary size (whisper_k8s.assets.processor.VARIANTS).
VARIANT_BY_VOCAB = {51866: "large-v3", 51865: "v2", 51864: "en"}
# OpenAI's released sizes: (d_model, encoder layers, decoder layers) -> name.
OPENAI_SIZES = {(384, 4, 4): "tiny", (512, 6, 6): "base", (768, 12, 12): "small", (1024, 24, 24): "medium",
                (1280, 32, 32): "large", (1280, 32, 4): "large-v3-turbo"}


def read_config_file(path: str | os.PathLike) -> dict:
    """A model.json / config.json as a dict (a folder: its config.json or model.json)."""
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in CONFIG_NAMES if (path / n).is_file()), None)
        if found is None:
            raise UserError(f"{path}: no {' or '.join(CONFIG_NAMES)} in this folder")
        path = found
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror})") from err
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or "d_model" not in config:
        raise UserError(f"{path}: not a Whisper model.json/config.json (no d_model field)")
    return config


def _layer_count(shapes: Mapping, stack: str) -> int:
    pattern = re.compile(rf"^model\.{stack}\.layers\.(\d+)\.")
    indices = [int(m.group(1)) for name in shapes if (m := pattern.match(name))]
    return max(indices) + 1 if indices else 0


def infer_dimensions(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """The size fields of a config, read off tensor shapes (either key style). {} when not Whisper-like."""
    try:
        vocab, d_model = shapes[TIED_EMBEDDING]
        return {
            "d_model": d_model,
            "vocab_size": vocab,
            "num_mel_bins": shapes["model.encoder.conv1.weight"][1],
            "encoder_layers": _layer_count(shapes, "encoder"),
            "decoder_layers": _layer_count(shapes, "decoder"),
            "encoder_ffn_dim": shapes["model.encoder.layers.0.fc1.weight"][0],
            "decoder_ffn_dim": shapes["model.decoder.layers.0.fc1.weight"][0],
            "max_source_positions": shapes["model.encoder.embed_positions.weight"][0],
            "max_target_positions": shapes["model.decoder.embed_positions.weight"][0],
        }
    except (KeyError, ValueError, IndexError):
        return {}


def describe_size(dims: Mapping[str, int]) -> str:
    """``large-v3`` style name of OpenAI's release these dimensions match, else "custom"."""
    if not dims:
        return "unknown (not a Whisper checkpoint)"
    name = OPENAI_SIZES.get((dims["d_model"], dims["encoder_layers"], dims["decoder_layers"]), "custom")
    if name == "large" and dims["num_mel_bins"] == 128:
        name = "large-v3"
    elif name != "custom" and dims["vocab_size"] == 51864:
        name += ".en"
    return (f"{name} (d_model {dims['d_model']}, {dims['encoder_layers']}+{dims['decoder_layers']} layers, "
            f"{dims['num_mel_bins']} mel bins, vocab {dims['vocab_size']})")


def _preset_files() -> list[Path]:
    try:
        from whisper_k8s.chart import preset_names, preset_path

        return [preset_path(name) for name in preset_names()]
    except UserError:  # no chart beside this installation
        return []


def preset_problems(shapes: Mapping[str, tuple[int, ...]], preset: Mapping) -> list[str]:
    """How ``shapes`` (either key style; a tied head may be absent) differ from ``preset``'s; [] when equal."""
    mm_shapes = {hf_to_mm_key(k): tuple(v) for k, v in shapes.items()}
    if TIED_EMBEDDING in mm_shapes:
        mm_shapes.setdefault(LM_HEAD, mm_shapes[TIED_EMBEDDING])  # HF checkpoints omit the tied head
    return check_mm_state(mm_shapes, preset)


def matching_preset(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, dict] | None:
    """The chart preset whose every MindSpeed-MM key and shape ``shapes`` (either key style) equals."""
    for path in _preset_files():
        preset = json.loads(path.read_text())
        if not preset_problems(shapes, preset):
            return path.stem, preset
    return None


def resolve_config(explicit, source) -> tuple[dict, str]:
    """The model config for ``source`` and where it came from (for logs and the marker)."""
    if explicit is not None:
        if isinstance(explicit, (str, os.PathLike)):
            return read_config_file(explicit), str(explicit)
        return dict(as_mapping(explicit)), "the given config"
    if source.config_path is not None:
        return read_config_file(source.config_path), str(source.config_path)
    shapes = source.shapes()
    preset = matching_preset(shapes)
    if preset is not None:
        log.info("no config given: %s matches the chart's %r model preset", source.path, preset[0])
        return preset[1], f"preset {preset[0]}"
    raise UserError(
        f"{source.path} carries no config.json/model.json and matches no model preset "
        f"({describe_size(infer_dimensions(shapes))}): pass --config PATH (a MindSpeed-MM model.json or a "
        "Hugging Face config.json)"
    )


def build_hf_config(model_config: Mapping, *, tie_word_embeddings: bool, dtype: str | None = None) -> dict:
    """``config.json`` content: the model.json fields (all WhisperConfig arguments once MindSpeed-MM's own
    bookkeeping is dropped), head tying decided by the weights (MindSpeed-MM trains an untied head) and the
    dtype of the written weights. Plain JSON: importing transformers would cost seconds per conversion."""
    fields = {k: v for k, v in as_mapping(model_config).items() if k not in _MM_ONLY}
    stated = fields.pop("torch_dtype", None) or fields.pop("dtype", None)
    fields.pop("transformers_version", None)
    fields.update(model_type="whisper", architectures=["WhisperForConditionalGeneration"],
                  tie_word_embeddings=tie_word_embeddings,
                  dtype=DTYPE_NAMES.get(str(dtype or stated or "float32"), "float32"))
    return fields


NON_SPEECH_SYMBOLS = (list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
                      + "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split())
MUSICAL_SYMBOLS = "♩♪♫♬♭♮♯"


def bpe_encode(ranks: Mapping[bytes, int], text: str) -> list[int]:
    """Byte-level BPE of ONE pre-tokenised piece: merge the lowest-ranked adjacent pair until none is left.

    Every string Whisper's non-speech list encodes is punctuation with at most a leading space, which its
    pre-tokeniser keeps as a single piece; so no splitting is needed and the full tokenizer need not be built.
    """
    parts = [bytes([b]) for b in text.encode("utf-8")]
    while len(parts) > 1:
        pairs = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False)) if a + b in ranks]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i: i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def non_speech_tokens(ranks: Mapping[bytes, int]) -> list[int]:
    """Ids of symbols Whisper never emits in speech (its ``suppress_tokens`` default, "-1")."""
    found = {bpe_encode(ranks, " -")[0], bpe_encode(ranks, " '")[0]}
    for symbol in NON_SPEECH_SYMBOLS + list(MUSICAL_SYMBOLS):
        for ids in (bpe_encode(ranks, symbol), bpe_encode(ranks, " " + symbol)):
            if len(ids) == 1 or symbol in MUSICAL_SYMBOLS:
                found.add(ids[0])
    return sorted(found)


def build_generation_config(model_config: Mapping) -> dict:
    """``generation_config.json`` content with Whisper's fields (language/task ids, suppressed tokens).

    Vocabularies that are not one of Whisper's (a custom size) get only the generic fields."""
    config = as_mapping(model_config)
    fields = {k: config[k] for k in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id",
                                     "begin_suppress_tokens") if k in config}
    fields["max_length"] = int(config.get("max_target_positions", 448))
    variant = VARIANT_BY_VOCAB.get(int(config.get("vocab_size", 0)))
    if variant is None:
        return fields
    from whisper_k8s.assets.processor import lang_to_id, special_ids

    ids = special_ids(variant)
    fields.update({
        "decoder_start_token_id": ids["decoder_start_token_id"],
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "begin_suppress_tokens": [220, ids["eos_token_id"]],
        "is_multilingual": variant != "en",
        "no_timestamps_token_id": ids["no_timestamps_token_id"],
        "prev_sot_token_id": ids["prev_sot_token_id"],
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
    })
    if variant != "en":  # English-only models take no language or task: an empty lang_to_id would make
        # transformers' generate "detect" a language among none
        fields["lang_to_id"] = lang_to_id(variant)
        fields["task_to_id"] = {"transcribe": ids["transcribe_token_id"], "translate": ids["translate_token_id"]}
    try:
        fields["suppress_tokens"] = _suppress_tokens(variant)
    except (UserError, OSError) as err:
        log.warning("generation_config.json: no suppress_tokens (Whisper's vocabulary is unavailable: %s)", err)
    return fields


@functools.lru_cache(maxsize=4)
def _suppress_tokens(variant: str) -> list[int]:
    """Non-speech symbols plus the control tokens Whisper never samples mid-text."""
    from whisper_k8s.assets.processor import get_variant, read_bpe_ranks, token_ids, whisper_assets_dir

    ranks = read_bpe_ranks(whisper_assets_dir() / get_variant(variant).rank_file)
    control = token_ids(variant)
    specials = {control[t] for t in ("<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                                     "<|startoflm|>", "<|startofprev|>", "<|nospeech|>")}
    return sorted(set(non_speech_tokens(ranks)) | specials)


def write_hf_configs(folder: Path, model_config: Mapping, *, tie_word_embeddings: bool, dtype: str | None) -> None:
    """Write ``config.json`` and ``generation_config.json`` into ``folder``."""
    config = build_hf_config(model_config, tie_word_embeddings=tie_word_embeddings, dtype=dtype)
    for name, content in (("config.json", config), ("generation_config.json", build_generation_config(config))):
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
