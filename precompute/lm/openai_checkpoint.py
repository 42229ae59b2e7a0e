"""OpenAI's released weight-sparse checkpoints (github openai/circuit_sparsity, Hugging Face openai/circuit-sparsity)
read into ``SparseGPT``, so that it gives the logits the released model gives.

A released model is a directory, ``models/<name>/`` in the release, holding ``beeg_config.json`` (the fields of the
``GPTConfig`` the checkpoint was written with) and ``final_model.pt`` (a state dict); the release's ``tinypython/``
folder, beside ``models/``, holds the tokenizer. ``--weights`` takes a model's directory or the downloaded release
itself when it holds one model (``model_directory``). ``SparseGPT`` uses the release's parameter and field names, so
most of a checkpoint loads as it is; what differs is mapped here:

- A field the config leaves out means what the release's ``GPTConfig`` defaults to (``THEIR_DEFAULTS``: LayerNorm
  with biases, tied unembedding, no bigram table, ...), which is often not ours. ``n_mlp`` is an old name of
  ``d_mlp``.
- A checkpoint without ``transformer.wpe.weight`` was trained without position embeddings: we build none, or, for
  fixed sinusoids, recompute them.
- An attention sink (``attn.attn_imp.sink_logit`` in the checkpoint, ``attn.sink_logit`` here) is computed as trained:
  one more slot in every softmax, with that logit and a zero value. A model trained with a sink and read without
  one gives other logits, so the sink is never dropped.
- Attention saved without flash carries its causal mask as a buffer ``attn.bias``: checked and dropped.
- Only the AbsTopK locations the model consults count; other ``afrac_loctypes`` entries never act, and are recorded.

Fields that change training or speed but not what an eval forward pass computes are accepted and recorded
(``ReleasedConfig.ignored``). Anything else (an unknown field, a value we cannot reproduce, a key left over or missing
after the mapping) is refused, naming the field or the keys. Torch and numpy are imported inside the functions that
need them, so the CLI and the registry check a directory before torch is imported.
"""

from __future__ import annotations

import hashlib
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
TOKENIZER_FILES = ("encoder.json", "vocab.bpe")  # GPT-2's BPE file format (precompute.lm.tokenizer.from_gpt2_files)
TOKENIZER_URL = "https://openaipublic.blob.core.windows.net/circuit-sparsity/tinypython/"
TOKENIZER_FOLDER = "tinypython"  # the release's folder for them, beside models/
MODELS_FOLDER = "models"  # the release's folder of models/<name>/
EOT_ID = 2047  # tinypython_2k's only special token, <|endoftext|>
# tinypython_2k's pre-tokenizer pattern, as the release defines the encoding.
TOKENIZER_PATTERN = r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# What a field a beeg_config.json leaves out means: the release's GPTConfig defaults (github openai/circuit_sparsity,
# circuit_sparsity/inference/gpt.py as of its commit of 2025-11-22).
THEIR_DEFAULTS: dict[str, Any] = {
    "block_size": 1024, "vocab_size": 50304, "n_layer": 12, "n_head": 12, "d_head": None, "d_model": 768,
    "d_mlp": None, "bias": True, "ln_bias": True, "rms_norm": False, "residual_activation_type": "identity",
    "activation_type": "gelu", "afrac": None, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
    "tied_unembed": True, "enable_bigram_table": False, "learnable_bigram_table": False, "d_pos_emb": None,
    "sinusoidal_cat_pos_emb": False, "sink": False,
}
# Fields that change training, memory or speed, never what the model computes in eval mode. A bigram_table_rank a
# config may carry is one of them: a released checkpoint stores its bigram table whole, [vocab, vocab], which is what
# atlascope loads (strictly, so a table stored any other way is refused by its keys).
NOT_IN_FORWARD = frozenset({"dropout", "dropout_cat_pos_emb", "grad_checkpointing", "flash", "debug_nans",
                            "enable_sparse_kernels", "tokenizer_name", "bigram_table_rank"})
SIZES = ("block_size", "vocab_size", "n_layer", "n_head", "d_model")
OPTIONAL_SIZES = ("d_head", "d_mlp", "d_pos_emb")
FLAGS = ("bias", "ln_bias", "rms_norm", "tied_unembed", "enable_bigram_table", "learnable_bigram_table",
         "sinusoidal_cat_pos_emb", "sink")
CHOICES = {"activation_type": ("gelu", "relu"), "residual_activation_type": ("identity", "relu")}
# Where a released model may apply AbsTopK (the same names as precompute.lm.model.SPARSITY_LOCATIONS).
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
                                  f"and {WEIGHTS_FILE} (from {RELEASE}); put both in {directory}, or give "
                                  f"--weights the downloaded release, whose {MODELS_FOLDER}/<name>/ folders hold them")
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
        raise CheckpointError(f"{path}: use_tied_aux_matrix={raw['use_tied_aux_matrix']!r} is not supported: "
                              f"atlascope reads checkpoints whose matrices are the model's own")
    if "use_tied_aux_matrix" in raw:
        ignored["use_tied_aux_matrix"] = raw.pop("use_tied_aux_matrix")
    if unknown := sorted(set(raw) - set(THEIR_DEFAULTS)):
        raise CheckpointError(f"{path}: unknown config field(s) {', '.join(f'{n}={raw[n]!r}' for n in unknown)}; "
                              f"atlascope reads the fields of the released GPTConfig only")
    c = {**THEIR_DEFAULTS, **raw}
    _check_values(path, c)
    loctypes = c["afrac_loctypes"].split(",")  # names as written: " attn_out" names no location, so never acts
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
    raise CheckpointError(f"the tokenizer {TOKENIZER} is needed to read and show tokens but {wanted} were not found "
                          f"in {', '.join(map(str, tokenizer_dirs(directory)))}: take {wanted} from the release's "
                          f"{TOKENIZER_FOLDER}/ folder (or {TOKENIZER_URL}) and put them in {directory} (beside "
                          f"{WEIGHTS_FILE})")


def load_tokenizer(directory: Path | str, name: str = TOKENIZER):
    """``tinypython_2k`` as a ``tokenizers.Tokenizer`` (``precompute.lm.tokenizer.from_gpt2_files``), read from the
    release's GPT-2-format files with the release's pre-tokenizer pattern, ``<|endoftext|>`` at ``EOT_ID``."""
    from precompute.lm.tokenizer import EOT, from_gpt2_files

    encoder_path, merges_path = tokenizer_files(directory, name)
    try:
        tokenizer = from_gpt2_files(encoder_path, merges_path, TOKENIZER_PATTERN)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot read the tokenizer {name} at {encoder_path.parent}: {exc}") from None
    if tokenizer.token_to_id(EOT) != EOT_ID:
        raise CheckpointError(f"{encoder_path}: {EOT} is token {tokenizer.token_to_id(EOT)}, but {name} has it at "
                              f"{EOT_ID}: these are not {name}'s files")
    return tokenizer


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
    spans = [held.tokens[start:end].tolist() for (_, start), end in zip(held.documents, ends)]
    texts = [ours.decode([i for i in ids if i != eot]) for ids in spans]
    pieces = [encoding.ids + [EOT_ID] * (ids[-1] == eot)
              for encoding, ids in zip(theirs.encode_batch(texts, add_special_tokens=False), spans)]
    starts = np.cumsum([0] + [len(piece) for piece in pieces[:-1]]).tolist()
    meta = {**held.meta, "tokens": sum(map(len, pieces)), "tokenizer": TOKENIZER,
            "retokenized": "decoded with the organisms' tokenizer, encoded with tinypython_2k"}
    return corpus.HeldOut(np.array([t for piece in pieces for t in piece], dtype=np.uint16),
                          [(name, start) for (name, _), start in zip(held.documents, starts)], meta)


def model_directory(given: Path | str) -> Path:
    """The released model ``--weights`` names: the directory itself when it holds a model's files, or the one model
    under ``models/`` of a downloaded release (``openai/circuit-sparsity`` from Hugging Face, kept whole, so its
    ``tinypython/`` folder is found beside ``models/``). A release holding several models asks for one of them."""
    given = Path(given)
    if (given / CONFIG_FILE).is_file() or not (given / MODELS_FOLDER).is_dir():
        return given
    found = sorted(folder for folder in (given / MODELS_FOLDER).iterdir() if (folder / CONFIG_FILE).is_file())
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"{given} holds {len(found)} released models; name one: "
                              f"{', '.join(f'--weights {folder}' for folder in found)}")
    return given


def card(directory: Path | str) -> dict[str, Any]:
    """A released model's card, measured from its files: its config, its weights' sparsity (``weights`` "sparse" when
    its matrices are at most ``render.lm_weights.SPARSE_AT_MOST`` nonzero, so the atlas pairs it with a dense
    baseline's circuits), its tokenizer, and the sha256 of its weights file (a model in an atlas is never mixed with
    other weights of the same name)."""
    from precompute.lm.sparsity import nonzero_report
    from precompute.weights import sha256_of
    from render.lm_weights import SPARSE_AT_MOST
    from store.keys import CardKey

    _, weights = files(directory)
    model = load(directory)
    matrices = nonzero_report({name: p.detach() for name, p in model.sparse_matrices().items()})
    fraction = sum(m["nonzero"] for m in matrices.values()) / sum(m["shape"][0] * m["shape"][1]
                                                                  for m in matrices.values())
    tokenizer = hashlib.sha256()
    for path in tokenizer_files(directory):
        tokenizer.update(path.read_bytes())
    return {
        CardKey.ARCHITECTURE: model.config.to_dict(),
        CardKey.SPARSITY: {"weights": "sparse" if fraction <= SPARSE_AT_MOST else "dense", "target": None,
                           "nonzero_fraction": round(fraction, 5), "matrices": matrices},
        CardKey.TOKENIZER: {"name": TOKENIZER, "vocab_size": model.config.vocab_size,
                            "file": " + ".join(TOKENIZER_FILES), "sha256": tokenizer.hexdigest()},
        CardKey.WEIGHTS: {"file": WEIGHTS_FILE, "sha256": sha256_of(weights), "bytes": weights.stat().st_size,
                          "found": "--weights"},
    }
