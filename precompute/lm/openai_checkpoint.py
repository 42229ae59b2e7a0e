"""OpenAI's released weight-sparse checkpoints (github openai/circuit_sparsity, Hugging Face openai/circuit-sparsity)
read into ``SparseGPT``, so that it gives the logits the released model gives.

A released model is a directory, ``models/<name>/`` in the release, holding ``beeg_config.json`` (the fields of their
``GPTConfig``) and ``final_model.pt`` (a state dict). ``SparseGPT`` uses their parameter and field names, so most of it
loads as it is; what differs is mapped here:

- A field the config leaves out takes *their* default (LayerNorm with biases, tied unembedding, no bigram table, ...),
  which is often not ours. ``n_mlp`` is an old name of ``d_mlp``.
- Their model always owns ``transformer.wpe``: added to the token embeddings, or concatenated to every block's input
  when ``d_pos_emb`` is set. A checkpoint without ``transformer.wpe.weight`` was trained without it (their loader loads
  non-strictly and would leave a random initialisation in its place): we then build no position embeddings, or, for
  fixed sinusoids, recompute them.
- Their attention sink lives in a submodule (``attn.attn_imp.sink_logit``), ours at ``attn.sink_logit``. Their
  ``load_model`` with its default ``flash=False`` silently drops the sink; we keep it, as the model was trained.
- Attention saved without flash carries its causal mask as a buffer ``attn.bias``: checked and dropped.
- Only the AbsTopK locations their model consults count; other ``afrac_loctypes`` entries never act, and are recorded.

Fields that change training or speed but not what an eval forward pass computes are accepted and recorded
(``ReleasedConfig.ignored``). Anything else (an unknown field, a value we cannot reproduce, a key left over or missing
after the mapping) is refused, naming the field or the keys. Torch, numpy and tiktoken are imported inside the
functions that need them, so the CLI and the registry check a directory before torch is imported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "beeg_config.json"
WEIGHTS_FILE = "final_model.pt"
RELEASE = "openai/circuit-sparsity on Hugging Face: models/<name>/"
TOKENIZER = "tinypython_2k"
TOKENIZER_FILES = ("encoder.json", "vocab.bpe")  # GPT-2's BPE file format, which their tiktoken plugin reads
TOKENIZER_URL = "https://openaipublic.blob.core.windows.net/circuit-sparsity/tinypython/"
TOKENIZER_FOLDER = "tinypython"  # the release's folder for them, beside models/
EOT = "<|endoftext|>"
EOT_ID = 2047  # tinypython_2k's only special token
# tinypython_2k's pre-tokenizer pattern, as the release defines the encoding.
TOKENIZER_PATTERN = r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Their GPTConfig's defaults: what a field a beeg_config.json leaves out means.
THEIR_DEFAULTS: dict[str, Any] = {
    "block_size": 1024, "vocab_size": 50304, "n_layer": 12, "n_head": 12, "d_head": None, "d_model": 768,
    "d_mlp": None, "bias": True, "ln_bias": True, "rms_norm": False, "residual_activation_type": "identity",
    "activation_type": "gelu", "afrac": None, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
    "tied_unembed": True, "enable_bigram_table": False, "learnable_bigram_table": False, "d_pos_emb": None,
    "sinusoidal_cat_pos_emb": False, "sink": False,
}
# Their fields that change training, memory or speed, never what the model computes in eval mode. Their loader pops
# bigram_table_rank: their bigram table is a full [vocab, vocab] matrix whatever it says.
NOT_IN_FORWARD = frozenset({"dropout", "dropout_cat_pos_emb", "grad_checkpointing", "flash", "debug_nans",
                            "enable_sparse_kernels", "tokenizer_name", "bigram_table_rank"})
SIZES = ("block_size", "vocab_size", "n_layer", "n_head", "d_model")
OPTIONAL_SIZES = ("d_head", "d_mlp", "d_pos_emb")
FLAGS = ("bias", "ln_bias", "rms_norm", "tied_unembed", "enable_bigram_table", "learnable_bigram_table",
         "sinusoidal_cat_pos_emb", "sink")
CHOICES = {"activation_type": ("gelu", "relu"), "residual_activation_type": ("identity", "relu")}
# Where their model asks whether AbsTopK acts (the same names as precompute.lm.model.SPARSITY_LOCATIONS).
LOCATIONS = ("attn_in", "attn_out", "attn_q", "attn_k", "attn_v", "mlp_in", "mlp_out", "mlp_neuron",
             "resid_post_attn", "resid_post_mlp")
CAUSAL_MASK = re.compile(r"transformer\.h\.\d+\.attn\.bias")


class CheckpointError(Exception):
    """A released checkpoint directory that is missing, incomplete, or asks for something we cannot reproduce."""


@dataclass(frozen=True)
class ReleasedConfig:
    values: dict[str, Any]  # our GPTConfig's fields
    ignored: dict[str, Any]  # their fields (and AbsTopK locations) that do not change the eval forward pass
    tokenizer_name: str


def files(directory: Path | str) -> tuple[Path, Path]:
    """The config and weights files of a released model's directory; an error naming the first one missing."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} not found: a released model's directory holds {CONFIG_FILE} "
                                  f"and {WEIGHTS_FILE} (from {RELEASE}); put both in {directory}")
    return directory / CONFIG_FILE, directory / WEIGHTS_FILE


def read_released(directory: Path | str) -> ReleasedConfig:
    """Their config as our ``GPTConfig``'s fields, checked, without torch. ``position_embedding`` says what their
    model does (add ``wpe`` unless it concatenates); ``load`` turns it off for weights that have no ``wpe``."""
    path, _ = files(directory)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds no JSON object of config fields")
    if "n_mlp" in raw:
        if "d_mlp" in raw:
            raise CheckpointError(f"{path} sets both n_mlp and d_mlp (n_mlp is an old name of d_mlp)")
        raw["d_mlp"] = raw.pop("n_mlp")
    ignored = {name: raw.pop(name) for name in sorted(NOT_IN_FORWARD & set(raw))}
    if raw.get("use_tied_aux_matrix", False) is not False:
        raise CheckpointError(f"{path}: use_tied_aux_matrix={raw['use_tied_aux_matrix']!r} is not supported "
                              f"(their released loader refuses it too)")
    if "use_tied_aux_matrix" in raw:
        ignored["use_tied_aux_matrix"] = raw.pop("use_tied_aux_matrix")
    if unknown := sorted(set(raw) - set(THEIR_DEFAULTS)):
        raise CheckpointError(f"{path}: unknown config field(s) {', '.join(f'{n}={raw[n]!r}' for n in unknown)}; "
                              f"atlascope reads the fields of the released GPTConfig only")
    c = {**THEIR_DEFAULTS, **raw}
    _check_values(path, c)
    loctypes = c["afrac_loctypes"].split(",")  # their test is exact membership: no stripping of spaces
    if inert := [loc for loc in loctypes if loc not in LOCATIONS]:
        ignored["afrac_loctypes (never consulted)"] = inert
    values = {name: c[name] for name in (*SIZES, "bias", "ln_bias", "rms_norm", "activation_type",
                                         "residual_activation_type", "afrac", "tied_unembed", "enable_bigram_table",
                                         "learnable_bigram_table", "d_pos_emb", "sinusoidal_cat_pos_emb", "sink")}
    values.update(
        d_head=c["d_head"] or c["d_model"] // c["n_head"],
        d_mlp=c["d_mlp"] or 4 * c["d_model"],
        afrac_loctypes=",".join(loc for loc in loctypes if loc in LOCATIONS),
        bigram_table_rank=None,
        position_embedding=c["d_pos_emb"] is None,
    )
    return ReleasedConfig(values, ignored, ignored.get("tokenizer_name", TOKENIZER))


def _check_values(path: Path, c: dict[str, Any]) -> None:
    """Refuse, by name, a value that would otherwise fail later as an obscure torch error or change the semantics."""
    def refuse(name: str, wanted: str) -> CheckpointError:
        return CheckpointError(f"{path}: {name}={c[name]!r} is not supported; it must be {wanted}")

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    for name in SIZES:
        if not positive_int(c[name]):
            raise refuse(name, "a positive integer")
    for name in OPTIONAL_SIZES:
        if c[name] is not None and not positive_int(c[name]):
            raise refuse(name, "null or a positive integer")
    for name in FLAGS:
        if not isinstance(c[name], bool):
            raise refuse(name, "true or false")
    for name, choices in CHOICES.items():
        if c[name] not in choices:
            raise refuse(name, " or ".join(choices))
    afrac = c["afrac"]
    if afrac is not None and (isinstance(afrac, bool) or not isinstance(afrac, (int, float)) or not 0 < afrac <= 1):
        raise refuse("afrac", "null or a fraction in (0, 1]")
    if not isinstance(c["afrac_loctypes"], str):
        raise refuse("afrac_loctypes", "a comma-separated string")


def read_config(directory: Path | str):
    """Their config as our ``GPTConfig`` (see ``read_released``)."""
    from precompute.lm.model import GPTConfig

    return GPTConfig.from_dict(read_released(directory).values)


def load(directory: Path | str):
    """The released model as a ``SparseGPT`` in eval mode on the CPU, loaded strictly after the mapping above."""
    import torch

    from precompute.lm.model import SparseGPT

    _, weights = files(directory)
    config = read_config(directory)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: zip, pickle and torch errors alike
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights} is not a state dict (parameter name -> tensor)")
    state = {name: _plain(tensor) for name, tensor in state.items()}
    if not config.d_pos_emb:
        config = replace(config, position_embedding="transformer.wpe.weight" in state)
    model = SparseGPT(config)
    _map_state(state, model, weights)
    expected = model.state_dict()
    missing, unexpected = [n for n in expected if n not in state], [n for n in state if n not in expected]
    if missing or unexpected:
        problems = [f"{label} {_first(names)}" for label, names in (("missing", missing), ("unexpected", unexpected))
                    if names]
        raise CheckpointError(f"{weights} does not fit the model its {CONFIG_FILE} describes: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes that disagree with the config
        raise CheckpointError(f"{weights} does not fit the model its {CONFIG_FILE} describes: {exc}") from None
    return model.eval()


def _plain(tensor):
    """A dense float32 tensor (weights may be stored sparse or in lower precision)."""
    import torch

    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return tensor.float() if tensor.is_floating_point() else tensor


def _map_state(state: dict, model, weights: Path) -> None:
    """Their names and conventions to ours, in place (see the module's docstring)."""
    import torch

    config = model.config
    for name in [n for n in state if CAUSAL_MASK.fullmatch(n)]:
        mask = state.pop(name)  # [1, 1, block_size, block_size]
        if not torch.equal(mask.reshape(-1, *mask.shape[-2:])[0] != 0,
                           torch.ones(mask.shape[-2:], dtype=torch.bool).tril()):
            raise CheckpointError(f"{weights}: {name} is not a causal mask, so attention would not be causal")
    for name in [n for n in state if n.endswith(".attn.attn_imp.sink_logit")]:
        state[name.replace(".attn_imp.", ".")] = state.pop(name)
    state.setdefault("final_logits_bias", torch.zeros(config.vocab_size))
    if config.d_pos_emb and config.sinusoidal_cat_pos_emb:  # fixed: the model computed them as theirs does
        state.setdefault("transformer.wpe.weight", model.transformer.wpe.weight.detach().clone())
    if config.tied_unembed:
        embed, unembed = state.get("transformer.wte.weight"), state.get("lm_head.weight")
        if embed is not None and unembed is not None and not torch.equal(embed, unembed):
            raise CheckpointError(f"{weights}: tied_unembed is true but transformer.wte.weight and lm_head.weight "
                                  f"differ")
        if (shared := unembed if unembed is not None else embed) is not None:
            state["transformer.wte.weight"] = state["lm_head.weight"] = shared


def _first(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def tokenizer_dirs(directory: Path | str) -> list[Path]:
    """Where the tokenizer's files are looked for, in order: beside the weights; the release's own layout (its
    ``tinypython/`` folder beside ``models/``); ``$ATLASCOPE_WEIGHTS_DIR/tinypython``."""
    directory = Path(directory)
    dirs = [directory, directory.parent.parent / TOKENIZER_FOLDER]
    if root := os.environ.get("ATLASCOPE_WEIGHTS_DIR"):
        dirs.append(Path(root) / TOKENIZER_FOLDER)
    return dirs


def tokenizer_files(directory: Path | str, name: str = TOKENIZER) -> tuple[Path, Path]:
    """``encoder.json`` and ``vocab.bpe`` of ``name`` for the model in ``directory``; an error saying which files to
    fetch and where to put them when they are not there."""
    if name != TOKENIZER:
        raise CheckpointError(f"tokenizer_name={name!r} is not supported; atlascope reads {TOKENIZER} only")
    for folder in tokenizer_dirs(directory):
        if all((folder / f).is_file() for f in TOKENIZER_FILES):
            return folder / TOKENIZER_FILES[0], folder / TOKENIZER_FILES[1]
    wanted = " and ".join(TOKENIZER_FILES)
    raise CheckpointError(f"the tokenizer {TOKENIZER} is needed to show tokens but {wanted} were not found in "
                          f"{', '.join(map(str, tokenizer_dirs(directory)))}: fetch {wanted} from {TOKENIZER_URL} "
                          f"and put them in {directory} (beside {WEIGHTS_FILE})")


def load_tokenizer(directory: Path | str, name: str = TOKENIZER):
    """``tinypython_2k`` as a ``tiktoken.Encoding``, read from the release's GPT-2-format files: ``encoder.json`` maps
    each token (bytes written in GPT-2's byte alphabet) to its id, which is also its BPE merge rank; ``vocab.bpe``
    lists the merges, one per token past the 256 single bytes."""
    import tiktoken

    from precompute.lm.tokenizer import _CHAR_TO_BYTE

    encoder_path, merges_path = tokenizer_files(directory, name)
    try:
        encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
        merges = [line for line in merges_path.read_text(encoding="utf-8").splitlines()[1:] if line]
        ranks = {bytes(_CHAR_TO_BYTE[ch] for ch in token): rank for token, rank in encoder.items()
                 if token not in (EOT, "<|startoftext|>")}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"cannot read the tokenizer at {encoder_path}: {exc!r}") from None
    if len(ranks) != 256 + len(merges) or sorted(ranks.values()) != list(range(len(ranks))):
        raise CheckpointError(f"{encoder_path} and {merges_path} disagree: {len(ranks)} tokens, {len(merges)} "
                              f"merges; expected 256 single bytes plus one token per merge, numbered from 0")
    return tiktoken.Encoding(name=name, pat_str=TOKENIZER_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: EOT_ID})


def heldout_sample(directory: Path | str):
    """atlascope's committed held-out sample (``precompute.lm.corpus``) in ``tinypython_2k``: the same documents,
    decoded from the organisms' tokens and encoded again, each whole one followed by ``<|endoftext|>``, so released
    models are read on the same text as the organisms."""
    import numpy as np

    from precompute.lm import corpus
    from precompute.lm import tokenizer as organisms

    theirs = load_tokenizer(directory)
    held, ours = corpus.load_heldout(), organisms.load_tokenizer()
    eot = organisms.eot_id(ours)
    ends = [start for _, start in held.documents[1:]] + [len(held.tokens)]
    pieces, documents, n = [], [], 0
    for (name, start), end in zip(held.documents, ends):
        ids = held.tokens[start:end].tolist()
        whole = ids[-1] == eot
        pieces.append(theirs.encode_ordinary(ours.decode([i for i in ids if i != eot])) + [EOT_ID] * whole)
        documents.append((name, n))
        n += len(pieces[-1])
    meta = {**held.meta, "tokens": n, "tokenizer": TOKENIZER,
            "retokenized": "decoded with the organisms' tokenizer, encoded with tinypython_2k"}
    return corpus.HeldOut(np.array([t for piece in pieces for t in piece], dtype=np.uint16), documents, meta)
