"""A `T5Config` from parameter shapes, for checkpoints that carry no configuration (t5x).

Inferred from shapes (names are t5x's, unscanned `layers_{i}` or scanned `layers`):

    vocab_size, emb_dim         token_embedder/embedding            [vocab, embed]
    num_heads, *_num_buckets    encoder/relpos_bias/rel_embedding   [heads, buckets]
    head_dim                    .../attention/query/kernel          [embed, heads * head_dim]
    mlp_dim                     .../mlp/wi(_0)/kernel               [embed, mlp]
    num_*_layers                count of layers_{i} (or axis 1 of the scanned stack)
    gated vs plain MLP          wi_0 + wi_1 present, or wi
    logits_via_embedding        True when decoder/logits_dense is absent (tied, T5 1.0)

Not inferable, so assumed (and reported as such by `ptune info --checkpoint`):
`relative_attention_max_distance` = 128 (T5's value for every published size; the shared tiny
test checkpoint uses 8), `dropout_rate` = 0.1, `dtype` = 'float32' (activations, a runtime
choice), `mlp_activations` = ('gelu', 'linear') when gated (T5 1.1, mT5) or ('relu',) when
plain (T5 1.0): shapes tell gated from plain but not the activation.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from ptune.errors import UserError
from ptune.models import t5

ASSUMED_DEFAULTS: dict[str, tuple[object, str]] = {
    "relative_attention_max_distance": (128, "not stored in the checkpoint; T5's value"),
    "dropout_rate": (0.1, "not stored in the checkpoint; T5's fine-tuning default"),
    "dtype": ("float32", "activation dtype, a runtime choice"),
}
GATED_ACTIVATIONS = ("gelu", "linear")
PLAIN_ACTIVATIONS = ("relu",)


def _layer_count(shapes: Mapping[str, tuple], stack: str) -> Optional[int]:
    indices = {
        int(m.group(1)) for name in shapes if (m := re.match(rf"{stack}/layers_(\d+)/", name))
    }
    if indices:
        return max(indices) + 1
    scanned = [
        shape
        for name, shape in shapes.items()
        if name.startswith(f"{stack}/layers/") and len(shape) >= 2
    ]
    return scanned[0][1] if scanned else None


def _find(shapes: Mapping[str, tuple], pattern: str) -> Optional[tuple]:
    for name, shape in shapes.items():
        if re.fullmatch(pattern, name):
            return shape
    return None


def infer_config(
    shapes: Mapping[str, tuple], path: str, hints: Optional[Mapping[str, object]] = None
) -> tuple[t5.T5Config, dict]:
    """(config, assumed) from `{t5x name: shape}`; `hints` are fields the checkpoint states
    outright (a Hugging Face config.json) and win over shapes. `assumed` maps each field
    that was neither stated nor inferable to a reason string."""
    hints = dict(hints or {})
    if not any(n.startswith(("encoder/", "decoder/")) for n in shapes):
        groups = sorted({n.split("/")[0] for n in shapes})
        raise UserError(
            f"{path} is not a T5 encoder-decoder checkpoint: it has no encoder/ or "
            f"decoder/ parameters (top-level groups: {', '.join(groups) or 'none'})"
        )
    problems = []
    fields: dict[str, object] = {}
    embedding = shapes.get("token_embedder/embedding")
    if embedding is None or len(embedding) != 2:
        problems.append("token_embedder/embedding [vocab, embed]")
    else:
        fields["vocab_size"], fields["emb_dim"] = int(embedding[0]), int(embedding[1])
    rel = shapes.get("encoder/relpos_bias/rel_embedding") or shapes.get(
        "decoder/relpos_bias/rel_embedding"
    )
    if rel is None or len(rel) != 2:
        problems.append("encoder/relpos_bias/rel_embedding [heads, buckets]")
    else:
        fields["num_heads"] = int(rel[0])
        fields["relative_attention_num_buckets"] = int(rel[1])
    query = _find(shapes, r"encoder/layers(_0)?/attention/query/kernel")
    if query is None:
        problems.append("encoder/layers_0/attention/query/kernel [embed, heads * head_dim]")
    elif "num_heads" in fields:
        joined = int(query[-1])
        if joined % fields["num_heads"]:
            problems.append(
                f"a query kernel width ({joined}) divisible by num_heads ({fields['num_heads']})"
            )
        else:
            fields["head_dim"] = joined // fields["num_heads"]
    wi = _find(shapes, r"encoder/layers(_0)?/mlp/wi(_0)?/kernel")
    if wi is None:
        problems.append("encoder/layers_0/mlp/wi(_0)/kernel [embed, mlp]")
    else:
        fields["mlp_dim"] = int(wi[-1])
    for stack in ("encoder", "decoder"):
        count = _layer_count(shapes, stack)
        if count is None:
            problems.append(f"{stack}/layers_0/...")
        else:
            fields[f"num_{stack}_layers"] = count
    missing_fields = [
        k
        for k in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "head_dim",
            "mlp_dim",
            "num_encoder_layers",
            "num_decoder_layers",
            "relative_attention_num_buckets",
        )
        if k not in hints
    ]
    if problems and any(k not in fields for k in missing_fields):
        raise UserError(
            f"cannot infer a T5Config from {path}: no "
            + "; no ".join(problems)
            + ". Pass the model's configuration explicitly (config=... or --gin_file)"
        )
    gated = any(re.search(r"/mlp/wi_0/kernel$", n) for n in shapes)
    fields["mlp_activations"] = GATED_ACTIVATIONS if gated else PLAIN_ACTIVATIONS
    fields["logits_via_embedding"] = "decoder/logits_dense/kernel" not in shapes
    assumed = {}
    if "mlp_activations" not in hints:
        assumed["mlp_activations"] = (
            "gated MLP: T5 1.1 / mT5 gated GELU" if gated else "plain MLP: T5 1.0 ReLU"
        )
    for name, (default, why) in ASSUMED_DEFAULTS.items():
        fields[name] = default
        if name not in hints:
            assumed[name] = why
    fields.update(hints)
    try:
        config = t5.T5Config(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: the inferred configuration is invalid: {e}") from e
    return config, assumed
