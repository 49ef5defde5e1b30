"""Formats shared by the trainer, the converter and the CLI: one source of truth for each.

- ``mindspeed``: MindSpeed-MM's Whisper key names, the HF <-> MM mapping and the expected key/shape table.
- ``megatron``: the Megatron checkpoint layout MindSpeed-MM saves and loads (tracker file, iteration folders,
  ``model_optim_rng.pt``) and safe loading of it.
"""
