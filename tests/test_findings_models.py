"""The frozen models of the paper's findings at small scale (`make findings-models`): three
sizes pretrained with the prefix-LM objective, the middle one also with span corruption only
and then LM-adapted for two step counts, shipped in tasks/data/findings."""

import ast
import os
import re

import jax
import numpy as np

from conftest import REPO
from ptune import checkpoints

FINDINGS = os.path.join(REPO, "tasks", "data", "findings")
# Each shipped model -> the model file it was pretrained from.
MODELS = {
    "small": "small",
    "medium": "medium",
    "large": "large",
    "medium_span": "medium",
    "medium_span_lm500": "medium",
    "medium_span_lm2000": "medium",
}


def _model_file_fields(size: str) -> dict:
    """The T5Config values models/findings_<size>.gin binds, read from its text."""
    path = os.path.join(REPO, "gin", "models", f"findings_{size}.gin")
    fields = {}
    for line in open(path).read().split("t5.T5Config:")[1].splitlines():
        found = re.match(r"\s+(\w+) = (.+?)\s*(#.*)?$", line)
        if found:
            fields[found.group(1)] = ast.literal_eval(found.group(2))
    return fields


def test_every_findings_model_ships_with_its_model_files_shape_and_the_sizes_span_16x():
    counts, weights = {}, {}
    for name, size in MODELS.items():
        config, params = checkpoints.load(os.path.join(FINDINGS, name))
        fields = _model_file_fields(size)
        assert len(fields) == 12
        for field, value in fields.items():
            got = getattr(config, field)
            assert (tuple(got) if isinstance(got, list) else got) == value, (name, field)
        leaves = jax.tree.leaves(params)
        counts[name] = sum(int(np.size(x)) for x in leaves)
        weights[name] = np.concatenate([np.ravel(x) for x in leaves])
    assert (counts["small"], counts["medium"], counts["large"]) == (18_672, 74_240, 345_408)
    assert counts["large"] / counts["small"] >= 16  # the span of sizes
    # LM adaptation continued the span-corruption model: every variant holds its own weights.
    variants = ("medium", "medium_span", "medium_span_lm500", "medium_span_lm2000")
    for i, a in enumerate(variants):
        for b in variants[i + 1 :]:
            assert not np.array_equal(weights[a], weights[b]), (a, b)
    size = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(FINDINGS) for f in names
    )
    assert size <= 10 * 2**20  # the repository's limit for shipped models
