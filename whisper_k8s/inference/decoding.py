"""Batched, incremental decoding of Whisper windows: greedy, sampling at a temperature, or beam search.

Each row is one window's encoder output and its own prompt (prompts of different lengths are left-padded,
with position ids that start at each prompt's first real token). The decoder runs with a key/value cache,
rows leave the batch as soon as they emit ``<|endoftext|>``, and every step applies Whisper's token rules
before choosing (``TokenRules``):

- never: the suppressed tokens (the model's ``suppress_tokens`` and every control token); first token never
  " " or ``<|endoftext|>``;
- timestamp mode: the first token is a timestamp of at most ``max_initial_timestamp`` (1 s); timestamps come
  in pairs (after a segment's closing timestamp, another timestamp or ``<|endoftext|>``; after a pair, text);
  they never decrease, and a segment's end is later than its start; when the timestamps together are more
  likely than the most likely text token, a timestamp is chosen;
- plain mode (``<|notimestamps|>`` in the prompt): no timestamp tokens.

A hypothesis carries what the fallback and silence rules of long-form decoding need: the sum of its tokens'
log-probabilities (after the rules, at temperature 1, ``<|endoftext|>`` included) and the probability of
``<|nospeech|>`` at the ``<|startoftranscript|>`` position.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

from whisper_k8s.inference.tokens import Vocabulary

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    tokens: list[int]  # chosen tokens after the prompt, <|endoftext|> excluded
    sum_logprob: float
    no_speech_prob: float
    temperature: float = 0.0

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)  # +1: the <|endoftext|> it ended with


class TokenRules:
    """Whisper's constraints on the next token, for a batch of rows (see the module docstring)."""

    def __init__(self, vocab: Vocabulary, timestamps: bool, device, vocab_size: int):
        self.eot = vocab.eot
        self.all_timestamps = vocab.timestamp_begin
        self.begin = vocab.timestamp_begin if timestamps else None
        self.max_initial = vocab.max_initial_timestamp
        self.suppress = torch.tensor(vocab.suppress, dtype=torch.long, device=device)
        self.begin_suppress = torch.tensor(vocab.begin_suppress, dtype=torch.long, device=device)
        if self.begin is not None:
            self.timestamp_ids = torch.arange(self.begin, vocab_size, device=device)

    def apply(self, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """``logits`` [N, V] (float32, changed in place) given the tokens chosen so far, ``generated`` [N, t]."""
        logits[:, self.suppress] = NEG_INF
        steps = generated.shape[1]
        if steps == 0:
            logits[:, self.begin_suppress] = NEG_INF
        if self.begin is None:
            if self.all_timestamps is not None:
                logits[:, self.all_timestamps:] = NEG_INF
            return logits
        begin = self.begin
        if steps == 0:
            logits[:, :begin] = NEG_INF
            logits[:, begin + self.max_initial + 1:] = NEG_INF
            return logits
        is_time = generated >= begin
        last = is_time[:, -1]
        penultimate = is_time[:, -2] if steps > 1 else torch.ones_like(last)
        logits[last & penultimate, begin:] = NEG_INF  # after a pair (or the opening one): text
        closing = last & ~penultimate
        logits[closing, : self.eot] = NEG_INF  # after a segment's end: the next start, or the end of text
        latest = torch.where(is_time, generated, -1).amax(dim=1)
        floor = torch.where(closing, latest, latest + 1)  # equal allowed only from one segment to the next
        earlier = (self.timestamp_ids[None, :] < floor[:, None]) & (latest >= 0)[:, None]
        logits[:, begin:] = logits[:, begin:].masked_fill(earlier, NEG_INF)
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp_mass = logprobs[:, begin:].logsumexp(dim=-1)
        logits[timestamp_mass > logprobs[:, :begin].amax(dim=-1), :begin] = NEG_INF
        return logits


@functools.lru_cache(maxsize=4)
def _cache_argument(decoder_class) -> str:
    """The name transformers gives the key/value cache argument (``cache`` in 5.x, ``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


class IncrementalDecoder:
    """One batch of prompts against encoder states, advanced a token at a time through a key/value cache."""

    def __init__(self, model, states: torch.Tensor, prompts: list[list[int]], pad: int):
        self.model, self.decoder, self.states = model, model.model.decoder, states
        length = max(len(p) for p in prompts)
        self.pads = [length - len(p) for p in prompts]
        device = states.device
        self.ids = torch.tensor([[pad] * k + p for k, p in zip(self.pads, prompts, strict=True)], device=device)
        self.padded = any(self.pads)
        self.mask = torch.tensor([[0] * k + [1] * len(p) for k, p in zip(self.pads, prompts, strict=True)],
                                 device=device) if self.padded else None
        self.next_position = torch.tensor([len(p) for p in prompts], device=device)
        self.cache = None

    def _run(self, ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        extra = {"attention_mask": self.mask, "position_ids": positions} if self.padded else {}
        out = self.decoder(input_ids=ids, encoder_hidden_states=self.states, use_cache=True,
                           **{_cache_argument(type(self.decoder)): self.cache}, **extra)
        self.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.proj_out(hidden).float()

    def start(self, no_speech: int | None, sot: int) -> tuple[torch.Tensor, list[float]]:
        """Run the prompts: the next-token logits [N, V] and each row's <|nospeech|> probability."""
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0) if self.padded else None
        hidden = self._run(self.ids, positions)
        no_speech_probs = [0.0] * len(self.pads)
        if no_speech is not None:
            sot_positions = (self.ids == sot).int().argmax(dim=1)
            rows = torch.arange(len(self.pads), device=hidden.device)
            probs = self.logits(hidden[rows, sot_positions]).softmax(dim=-1)[:, no_speech]
            no_speech_probs = probs.tolist()
        return self.logits(hidden[:, -1]), no_speech_probs

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; the next-token logits [N, V]."""
        positions = None
        if self.padded:
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self.logits(self._run(tokens[:, None], positions)[:, -1])

    def keep(self, rows: torch.Tensor, reorder: bool = False) -> None:
        """Keep only ``rows`` (in that order; ``reorder``: rows may repeat, as beams do)."""
        if reorder:
            self.cache.reorder_cache(rows)
        else:
            self.cache.batch_select_indices(rows)
        self.states = self.states[rows]
        self.next_position = self.next_position[rows]
        if self.padded:
            self.mask = self.mask[rows]


def next_token_logits(model, states: torch.Tensor, prompts: list[list[int]], pad: int) -> torch.Tensor:
    """The logits [N, V] after each prompt (language detection, the timestamp probe)."""
    return IncrementalDecoder(model, states, prompts, pad).start(None, pad)[0]


def decode(model, states: torch.Tensor, prompts: list[list[int]], vocab: Vocabulary, *, timestamps: bool,
           temperature: float = 0.0, num_beams: int = 1, max_new_tokens: int = 224,
           generator: torch.Generator | None = None) -> list[Hypothesis]:
    """One hypothesis per row: beam search when ``num_beams`` > 1 at temperature 0, else greedy (T = 0) or
    sampling from the softmax at ``temperature``."""
    rules = TokenRules(vocab, timestamps, states.device, model.config.vocab_size)
    room = [min(max_new_tokens, model.config.max_target_positions - len(p)) for p in prompts]
    if num_beams > 1 and temperature == 0:
        return _beam_search(model, states, prompts, vocab, rules, num_beams, max(room))
    return _sample(model, states, prompts, vocab, rules, temperature, room, generator)


def _sample(model, states, prompts, vocab: Vocabulary, rules: TokenRules, temperature: float, room: list[int],
            generator) -> list[Hypothesis]:
    decoder = IncrementalDecoder(model, states, prompts, vocab.eot)
    logits, no_speech = decoder.start(vocab.no_speech, vocab.sot)
    device = logits.device
    alive = torch.arange(len(prompts), device=device)
    limit = torch.tensor(room, device=device)
    generated = torch.empty(len(prompts), 0, dtype=torch.long, device=device)
    sums = torch.zeros(len(prompts), device=device)
    found: list[Hypothesis | None] = [None] * len(prompts)
    while True:
        logits = rules.apply(logits, generated)
        logprobs = torch.log_softmax(logits, dim=-1)
        if temperature == 0:
            tokens = logits.argmax(dim=-1)
        else:
            tokens = torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=generator)[:, 0]
        sums = sums + logprobs.gather(1, tokens[:, None])[:, 0]
        generated = torch.cat([generated, tokens[:, None]], dim=1)
        done = (tokens == vocab.eot) | (generated.shape[1] >= limit[alive])
        if bool(done.any()):
            for row in done.nonzero()[:, 0].tolist():
                ids = generated[row].tolist()
                index = int(alive[row])
                found[index] = Hypothesis(ids[:-1] if ids[-1] == vocab.eot else ids, float(sums[row]),
                                          no_speech[index], temperature)
            rows = (~done).nonzero()[:, 0]
            if rows.numel() == 0:
                return found
            decoder.keep(rows)
            alive, generated, sums, tokens = alive[rows], generated[rows], sums[rows], tokens[rows]
        logits = decoder.step(tokens)


def _beam_search(model, states, prompts, vocab: Vocabulary, rules: TokenRules, beams: int, room: int
                 ) -> list[Hypothesis]:
    """Beam search as Whisper's: ``beams`` live beams per window; a window is done when ``beams`` hypotheses
    have ended; the best is the one with the highest sum of log-probabilities per token."""
    count, vocab_size = len(prompts), model.config.vocab_size
    decoder = IncrementalDecoder(model, states.repeat_interleave(beams, dim=0),
                                 [p for p in prompts for _ in range(beams)], vocab.eot)
    logits, no_speech = decoder.start(vocab.no_speech, vocab.sot)
    device = logits.device
    sums = torch.zeros(count, beams, device=device)
    sums[:, 1:] = NEG_INF  # all beams start equal: expand the first only
    sums = sums.view(-1)
    generated = torch.empty(count * beams, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(count)]
    for _ in range(room):
        logits = rules.apply(logits, generated)
        scores = (sums[:, None] + torch.log_softmax(logits, dim=-1)).view(count, beams * vocab_size)
        top_scores, top_ids = (t.tolist() for t in scores.topk(2 * beams, dim=1))
        sources, tokens, new_sums = [], [], []
        for window in range(count):
            live = []
            for score, flat in zip(top_scores[window], top_ids[window], strict=True):
                source, token = window * beams + flat // vocab_size, flat % vocab_size
                if token == vocab.eot:
                    if len(finished[window]) < beams and score > NEG_INF:
                        finished[window].append((generated[source].tolist(), score))
                elif len(live) < beams:
                    live.append((source, token, score))
            for source, token, score in live:
                sources.append(source)
                tokens.append(token)
                new_sums.append(score)
        if all(len(f) >= beams for f in finished):
            break
        rows = torch.tensor(sources, device=device)
        decoder.keep(rows, reorder=True)
        token_tensor = torch.tensor(tokens, device=device)
        generated = torch.cat([generated[rows], token_tensor[:, None]], dim=1)
        sums = torch.tensor(new_sums, device=device)
        logits = decoder.step(token_tensor)
    results = []
    for window in range(count):
        candidates = finished[window] or [
            (generated[row].tolist(), float(sums[row])) for row in range(window * beams, (window + 1) * beams)]
        tokens, score = max(candidates, key=lambda c: c[1] / max(len(c[0]), 1))
        results.append(Hypothesis(tokens, score, no_speech[window * beams]))
    return results
