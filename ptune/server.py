"""Serving many prompts over one frozen model: prompt banks, mixed-task batches, ensembling.

A `Bank` stacks K named prompts [K, max P, E]; every example carries a prompt index, so one
jitted call serves a batch that mixes tasks (what a single-adapter system must split into
per-task batches). Prompts of different lengths are padded and masked, never truncated, and
each example's result equals that of running its prompt alone.

Ensembling (paper, Table 3): N prompts for one task in one pass, each example expanded N
times; generated labels are combined by majority vote, rank-classification scores by their
mean log-likelihood.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Hashable, Mapping, Optional, Sequence

import jax
import numpy as np

from ptune import family as family_lib
from ptune import prompts
from ptune.errors import UserError
from ptune.models import search

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Bank:
    """Named prompts stacked for one model: prompts [K, max P, E], lengths (P_k)."""

    names: tuple[str, ...]
    prompts: np.ndarray
    lengths: tuple[int, ...]
    placement: str = "prefix"

    @classmethod
    def from_arrays(cls, named: Mapping[str, np.ndarray], placement: str = "prefix") -> "Bank":
        names = tuple(named)
        stacked, lengths = prompts.stack_bank([np.asarray(named[n]) for n in names], names)
        return cls(names, stacked, lengths, placement)

    @classmethod
    def from_files(cls, named_files: Mapping[str, str], placement: str = "prefix") -> "Bank":
        from ptune.checkpoints import prompt_io

        if not named_files:
            raise UserError("no prompts given: name at least one prompt file")
        return cls.from_arrays(
            {name: prompt_io.load_prompt_file(path) for name, path in named_files.items()},
            placement,
        )

    def index(self, name: str) -> int:
        if name not in self.names:
            raise UserError(f"unknown prompt {name!r}; the bank holds {list(self.names)}")
        return self.names.index(name)

    def check(self, prompt_index: np.ndarray, what: str = "prompt_index") -> np.ndarray:
        """Indices must name bank entries: jnp.take would silently clip them."""
        prompt_index = np.asarray(prompt_index, np.int32)
        bad = np.flatnonzero((prompt_index < 0) | (prompt_index >= len(self.names)))
        if bad.size:
            raise UserError(
                f"{what} {int(prompt_index[bad[0]])} at position {int(bad[0])} is "
                f"out of range for a bank of {len(self.names)} prompts"
            )
        return prompt_index


class Server:
    """One frozen model with a bank of prompts, called with fixed batch shapes.

    run: the assembled run (`recipe.assemble`: model configuration, mesh, frozen dtype, data
      layout), whatever its own prompt module; the server's model holds the bank's.
    frozen: the model's parameters without a prompt (as `run.load_frozen` returns them); the
      bank goes into the prompt slot.
    Inputs are token arrays; rows are split into batches of `batch_size` (the last padded) so
    every call reuses one compilation.
    """

    def __init__(
        self,
        run: Any,
        frozen: PyTree,
        bank: Bank,
        batch_size: int = 32,
        vocab_limit: Optional[int] = None,
        eos_id: int = 1,
    ):
        if bank.prompts.shape[-1] != run.config.emb_dim:
            raise UserError(
                f"prompt width {bank.prompts.shape[-1]} does not match the model's "
                f"emb_dim {run.config.emb_dim}"
            )
        self.bank = bank
        self.batch_size = batch_size
        self.vocab_limit = vocab_limit  # ids at or past it (embedding padding) never decode
        self.eos_id = eos_id  # the vocabulary's; every output is 0 after it
        self.run = run.with_prompt_module(prompts.bank_factory(bank.lengths, bank.placement))
        self.family = self.run.family
        self.model = self.run.model
        self.params = self.run.place_prompt(frozen, bank.prompts)
        self.generator = self.family.bank_generator(self.model, frozen, bank)

    def _batched(self, fn, arrays: Sequence[np.ndarray], prompt_index: np.ndarray):
        prompt_index = self.bank.check(prompt_index)
        n = len(prompt_index)
        outputs = []
        for start in range(0, n, self.batch_size):
            rows = slice(start, min(start + self.batch_size, n))
            pad = self.batch_size - (rows.stop - rows.start)
            chunk = [
                np.pad(np.asarray(a[rows], np.int32), [(0, pad)] + [(0, 0)] * (a.ndim - 1))
                for a in arrays
            ]
            index = np.pad(prompt_index[rows], (0, pad))
            out = fn(*chunk, index)
            outputs.append(
                jax.tree_util.tree_map(lambda x: np.asarray(x)[: rows.stop - rows.start], out)
            )
        return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *outputs)

    def generate(
        self,
        encoder_input_tokens: np.ndarray,
        prompt_index: np.ndarray,
        *,
        max_length: int,
        num_beams: int = 1,
        alpha: float = 0.6,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> np.ndarray:
        """[n, ls] tokens, [n] prompt indices -> [n, max_length]: greedy (temperature 0), the
        best beam (num_beams > 1), or sampled with temperature / top-k / top-p, each batch
        from its own key folded from `seed`."""
        search.check_decoding(num_beams, temperature, top_k, top_p)
        decode = family_lib.Decoding(
            num_beams,
            alpha,
            temperature,
            top_k,
            top_p,
            vocab_limit=self.vocab_limit,
            eos_id=self.eos_id,
        )
        self.family.require_decoding(decode)
        calls = iter(range(1 << 30))

        def fn(tokens, index):
            rng = jax.random.fold_in(jax.random.PRNGKey(seed), next(calls))
            return self.generator(tokens, index, max_length, decode, rng=rng)

        out = self._batched(fn, [encoder_input_tokens], prompt_index)
        return after_eos_zeroed(out, self.eos_id)

    def score(
        self,
        encoder_input_tokens: np.ndarray,
        decoder_target_tokens: np.ndarray,
        prompt_index: np.ndarray,
    ) -> np.ndarray:
        """Log-likelihood of each target [n] (decoder inputs are the targets shifted right)."""
        targets = np.asarray(decoder_target_tokens, np.int32)
        fn = functools.partial(family_lib.score, self.model, self.params)
        return self._batched(fn, [encoder_input_tokens, targets], prompt_index)


def expand_for_ensemble(n_examples: int, members: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Example-major expansion: (row of each example [n * N], prompt index [n * N])."""
    members = np.asarray(members, np.int32)
    rows = np.repeat(np.arange(n_examples), len(members))
    return rows, np.tile(members, n_examples)


def majority_vote(votes: Sequence[Sequence[Hashable]]) -> list[Hashable]:
    """votes [n][N] -> winner per example. Ties go to the tied answer that the lowest-numbered
    prompt gave, so the result never depends on hashing or dictionary order."""
    winners = []
    for row in votes:
        counts = collections.Counter(row)
        best = max(counts.values())
        winners.append(next(v for v in row if counts[v] == best))
    return winners


def ensemble_generate(
    server: Server,
    encoder_input_tokens: np.ndarray,
    members: Sequence[int],
    *,
    max_length: int,
    num_beams: int = 1,
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """One pass over n examples x N prompts. Returns (per-prompt outputs [N, n, max_length],
    majority-voted token sequences [n], as tuples without padding)."""
    n = len(encoder_input_tokens)
    rows, index = expand_for_ensemble(n, members)
    out = server.generate(
        np.asarray(encoder_input_tokens)[rows], index, max_length=max_length, num_beams=num_beams
    )
    per_prompt = out.reshape(n, len(members), -1).transpose(1, 0, 2)
    votes = [
        [_strip(per_prompt[m, i], server.eos_id) for m in range(len(members))] for i in range(n)
    ]
    return per_prompt, majority_vote(votes)


def ensemble_scores(
    server: Server,
    encoder_input_tokens: np.ndarray,
    decoder_target_tokens: np.ndarray,
    members: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of n (input, target) pairs under N prompts in one pass:
    (per-prompt [N, n], mean log-likelihood [n])."""
    n = len(encoder_input_tokens)
    rows, index = expand_for_ensemble(n, members)
    scores = server.score(
        np.asarray(encoder_input_tokens)[rows], np.asarray(decoder_target_tokens)[rows], index
    )
    per_prompt = scores.reshape(n, len(members)).T
    return per_prompt, per_prompt.mean(axis=0)


def after_eos_zeroed(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """[n, l] decoded tokens with every position after each row's first EOS set to 0, as
    T5's decoding leaves them."""
    tokens = np.asarray(tokens)
    seen = np.cumsum(tokens == eos_id, axis=1)
    after = (seen - (tokens == eos_id)) > 0
    return np.where(after, 0, tokens)


def _strip(tokens: np.ndarray, eos_id: int = 1) -> tuple[int, ...]:
    """Token ids up to (and including) EOS, as a hashable vote."""
    ids = [int(t) for t in tokens]
    return tuple(ids[: ids.index(eos_id) + 1] if eos_id in ids else [t for t in ids if t])


def tokenize(vocabulary, text: str, length: int, eos_id: int = 1) -> np.ndarray:
    """T5-style encoder input: tokens of `text`, truncated to leave room for EOS, then EOS."""
    ids = list(vocabulary.encode(text))[: length - 1] + [eos_id]
    out = np.zeros(length, np.int32)
    out[: len(ids)] = ids
    return out


def serve_mixed(
    server: Server,
    requests: Sequence[tuple[str, np.ndarray]],
    *,
    max_length: int,
    num_beams: int = 1,
) -> np.ndarray:
    """(prompt name, encoder tokens [ls]) requests, served in mixed batches -> [n, lt]."""
    index = np.array([server.bank.index(name) for name, _ in requests], np.int32)
    tokens = np.stack([t for _, t in requests])
    return server.generate(tokens, index, max_length=max_length, num_beams=num_beams)
