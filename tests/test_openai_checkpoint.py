"""OpenAI's released checkpoint layout read into SparseGPT: checkpoints written here in that layout (their parameter
names, a beeg_config.json, random weights) must give the logits of a second, independent forward pass written below
as plain functional torch from the state dict and the config, to 1e-5, for every option a checkpoint can set.

The release's tokenizer, in GPT-2's file format (encoder.json + vocab.bpe, written here), is read with ``tokenizers``
and encodes as its ranks define BPE (checked against a rank-merging BPE written below); tasks are read in each
model's tokenizer (OpenAI's "]\\n" / "]]\\n" where it has them). End to end: a release as downloaded, holding a
hand-built sparse model that closes strings and its dense baseline, with a tokenizer trained here, gets its quote
circuits from `atlascope precompute openai-csp` (the circuit found is the mechanism the model was built from), and the
server answers the circuit page, its twin, its circuit-tracer JSON and the sparse-vs-dense comparison; a candidate
that is two tokens of the released tokenizer exits 2 before anything is written.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from precompute.lm import openai_checkpoint as oc
from precompute.lm.model import SPARSITY_LOCATIONS
from precompute.lm.tasks import SPLITS, TASKS, split
from precompute.lm.tokenizer import _CHAR_TO_BYTE
from precompute.registry import get_model
from tests.conftest import atlascope

NO_TORCH = [sys.executable, str(Path(__file__).with_name("no_torch.py")), "-m", "precompute.cli"]
TINY = {"block_size": 16, "vocab_size": 64, "n_layer": 2, "n_head": 4, "d_model": 32}
ALL_LOCATIONS = "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron"
# What the released GPTConfig means by a field that a config leaves out (written out again here, on purpose).
DEFAULTS = {"d_head": None, "d_mlp": None, "bias": True, "ln_bias": True, "rms_norm": False, "afrac": None,
            "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out", "activation_type": "gelu",
            "residual_activation_type": "identity", "tied_unembed": True, "enable_bigram_table": False,
            "learnable_bigram_table": False, "d_pos_emb": None, "sinusoidal_cat_pos_emb": False, "sink": False}


def resolved(config: dict) -> dict:
    c = {**DEFAULTS, **config}
    if "n_mlp" in c:
        c["d_mlp"] = c.pop("n_mlp")
    c["d_head"] = c["d_head"] or c["d_model"] // c["n_head"]
    c["d_mlp"] = c["d_mlp"] or 4 * c["d_model"]
    return c


def random_state(config: dict, seed: int = 0, position_embedding: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the released parameter names for ``config``."""
    c = resolved(config)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    d_in = c["d_model"] + (c["d_pos_emb"] or 0)
    d_attn = c["n_head"] * c["d_head"]
    state: dict[str, torch.Tensor] = {}

    def norm(prefix, width):
        state[f"{prefix}.weight"] = 1 + rand(width, scale=0.2)
        if not c["rms_norm"] and c["ln_bias"]:
            state[f"{prefix}.bias"] = rand(width, scale=0.2)

    def linear(prefix, n_in, n_out):
        state[f"{prefix}.weight"] = rand(n_out, n_in, scale=1 / math.sqrt(n_in))
        if c["bias"]:
            state[f"{prefix}.bias"] = rand(n_out, scale=0.1)

    state["transformer.wte.weight"] = rand(c["vocab_size"], c["d_model"], scale=0.3)  # logits of a few units
    if position_embedding:
        state["transformer.wpe.weight"] = rand(c["block_size"], c["d_pos_emb"] or c["d_model"], scale=0.5)
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        norm(f"{p}.ln_1", c["d_model"])
        norm(f"{p}.ln_2", c["d_model"])
        if c["d_pos_emb"]:
            norm(f"{p}.ln_p1", c["d_pos_emb"])
            norm(f"{p}.ln_p2", c["d_pos_emb"])
        linear(f"{p}.attn.c_attn", d_in, 3 * d_attn)
        linear(f"{p}.attn.c_proj", d_attn, c["d_model"])
        if c["sink"]:
            state[f"{p}.attn.attn_imp.sink_logit"] = rand(c["n_head"])
        linear(f"{p}.mlp.c_fc", d_in, c["d_mlp"])
        linear(f"{p}.mlp.c_proj", c["d_mlp"], c["d_model"])
    norm("transformer.ln_f", c["d_model"])
    state["lm_head.weight"] = state["transformer.wte.weight"] if c["tied_unembed"] else rand(
        c["vocab_size"], c["d_model"], scale=1 / math.sqrt(c["d_model"]))
    state["final_logits_bias"] = rand(c["vocab_size"], scale=0.5)
    if c["enable_bigram_table"]:
        state["bigram_table"] = rand(c["vocab_size"], c["vocab_size"])
    return state


def write(directory: Path, config: dict, state: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "beeg_config.json").write_text(json.dumps(config))
    torch.save(state, directory / "final_model.pt")
    return directory


def sinusoids(length: int, width: int) -> torch.Tensor:
    """Fixed position codes as released: sin then cos of position x 2 pi / period, periods log-spaced from 4 to the
    context length, zero-padded to the width."""
    half = max(1, width // 2)
    periods = 10 ** torch.linspace(math.log10(4.0), math.log10(max(4.0, length)), half)
    angle = torch.arange(length, dtype=torch.float32)[:, None] * (2 * math.pi / periods)[None, :]
    return F.pad(torch.cat([angle.sin(), angle.cos()], dim=1), (0, max(0, width - 2 * half)))[:, :width]


def reference_logits(config: dict, state: dict, idx: torch.Tensor) -> torch.Tensor:
    """The released model's forward pass, re-derived from its semantics as plain tensor algebra in float64 (so its
    own rounding is negligible next to the float32 model's)."""
    c = resolved(config)
    state = {name: tensor.double() for name, tensor in state.items()}
    batch, time = idx.shape
    heads, d_head = c["n_head"], c["d_head"]
    where = set(c["afrac_loctypes"].split(",")) if c["afrac"] is not None else set()

    def sparsify(x, location):
        if location not in where:
            return x
        k = int(c["afrac"] * x.shape[-1])
        threshold = x.abs().sort(dim=-1, descending=True).values[..., k - 1: k] if k else x.abs().max() + 1
        return torch.where(x.abs() >= threshold, x, torch.zeros(()))

    def norm(x, prefix):
        weight = state[f"{prefix}.weight"]
        if c["rms_norm"]:
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps) * weight
        centred = x - x.mean(-1, keepdim=True)
        y = centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + 1e-5) * weight
        return y + state.get(f"{prefix}.bias", 0.0)

    def linear(x, prefix):
        return x @ state[f"{prefix}.weight"].T + state.get(f"{prefix}.bias", 0.0)

    def act(x):
        return torch.clamp(x, min=0) if c["activation_type"] == "relu" else 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    def resid(x):
        return torch.clamp(x, min=0) if c["residual_activation_type"] == "relu" else x

    def with_positions(h, prefix):
        return h if pos is None else torch.cat([h, norm(pos, prefix).expand(batch, time, -1)], dim=-1)

    wpe = state.get("transformer.wpe.weight")
    if wpe is None and c["d_pos_emb"] and c["sinusoidal_cat_pos_emb"]:
        wpe = sinusoids(c["block_size"], c["d_pos_emb"])
    x = state["transformer.wte.weight"][idx]
    pos = None
    if c["d_pos_emb"]:
        pos = wpe[:time][None].double()
    elif wpe is not None:
        x = x + wpe[:time]
    future = torch.ones(time, time).triu(1).bool()
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        h = sparsify(with_positions(norm(x, f"{p}.ln_1"), f"{p}.ln_p1"), "attn_in")
        q, k, v = linear(h, f"{p}.attn.c_attn").split(heads * d_head, dim=-1)
        q, k, v = (sparsify(t, loc).reshape(batch, time, heads, d_head).permute(0, 2, 1, 3)
                   for t, loc in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d_head)).masked_fill(future, -torch.inf)
        if c["sink"]:  # one more always-visible slot: logit sink_logit, value zero
            sink = state[f"{p}.attn.attn_imp.sink_logit"].reshape(1, heads, 1, 1).expand(batch, heads, time, 1)
            weights = torch.softmax(torch.cat([sink, scores], dim=-1), dim=-1)[..., 1:]
        else:
            weights = torch.softmax(scores, dim=-1)
        z = (weights @ v).permute(0, 2, 1, 3).reshape(batch, time, heads * d_head)
        x = sparsify(resid(x + sparsify(linear(z, f"{p}.attn.c_proj"), "attn_out")), "resid_post_attn")
        h = sparsify(with_positions(norm(x, f"{p}.ln_2"), f"{p}.ln_p2"), "mlp_in")
        neurons = sparsify(act(linear(h, f"{p}.mlp.c_fc")), "mlp_neuron")
        x = sparsify(resid(x + sparsify(linear(neurons, f"{p}.mlp.c_proj"), "mlp_out")), "resid_post_mlp")
    logits = norm(x, "transformer.ln_f") @ state["lm_head.weight"].T + state.get("final_logits_bias", 0.0)
    return logits + state["bigram_table"][idx] if c["enable_bigram_table"] else logits


CASES = {
    "paper": {**TINY, "d_head": 16, "rms_norm": True, "bias": False, "afrac": 0.25, "afrac_loctypes": ALL_LOCATIONS,
              "tied_unembed": False, "enable_bigram_table": True, "learnable_bigram_table": True},
    "their_defaults": TINY,  # LayerNorm with biases, linear biases, GELU, tied unembedding, added wpe
    "layernorm_no_bias_relu": {**TINY, "ln_bias": False, "bias": False, "activation_type": "relu",
                               "residual_activation_type": "relu", "n_mlp": 48, "afrac": 0.5,
                               "afrac_loctypes": "mlp_neuron,resid_post_attn,resid_post_mlp"},
    "sink_fixed_bigram": {**TINY, "rms_norm": True, "sink": True, "tied_unembed": False, "enable_bigram_table": True,
                          "learnable_bigram_table": False, "afrac": 0.25, "afrac_loctypes": "attn_q,attn_k,attn_v"},
    "cat_pos_emb": {**TINY, "d_pos_emb": 8, "rms_norm": True, "d_head": 4, "afrac": 0.25,
                    "afrac_loctypes": "attn_in,mlp_in,attn_out"},
    "cat_sinusoids": {**TINY, "d_pos_emb": 6, "sinusoidal_cat_pos_emb": True, "bias": False},
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_an_independent_forward_pass(tmp_path: Path, case: str):
    config = CASES[case]
    state = random_state(config)
    write(tmp_path, config, state)
    model = oc.load(tmp_path)
    idx = torch.randint(0, config["vocab_size"], (3, config["block_size"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)
    torch.testing.assert_close(ours.double(), reference_logits(config, state, idx), rtol=0, atol=1e-5)
    assert not model.training and next(model.parameters()).device.type == "cpu"


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_weights_as_released_variously(tmp_path: Path):
    """No wpe (trained without: none added), no final_logits_bias (zeros), tied weights saved once, a weight stored
    sparse, the causal-mask buffer of non-flash attention, fixed sinusoids left out of the state dict."""
    config = {**TINY, "rms_norm": True, "d_pos_emb": None}
    state = random_state(config, position_embedding=False)
    del state["final_logits_bias"], state["transformer.wte.weight"]
    reference_state = {**state, "transformer.wte.weight": state["lm_head.weight"]}
    state["transformer.h.0.mlp.c_fc.weight"] = state["transformer.h.0.mlp.c_fc.weight"].to_sparse()
    state["transformer.h.1.attn.bias"] = torch.ones(16, 16).tril().view(1, 1, 16, 16)
    write(tmp_path, config, state)
    model = oc.load(tmp_path)
    assert not model.config.position_embedding and "wpe" not in model.transformer
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).double(), reference_logits(config, reference_state, idx), rtol=0,
                                   atol=1e-5)

    sinusoidal = {**TINY, "d_pos_emb": 6, "sinusoidal_cat_pos_emb": True}
    state = random_state(sinusoidal)
    del state["transformer.wpe.weight"]
    write(tmp_path / "sinusoids", sinusoidal, state)
    with torch.no_grad():
        torch.testing.assert_close(oc.load(tmp_path / "sinusoids")(idx).double(),
                                   reference_logits(sinusoidal, state, idx), rtol=0, atol=1e-5)


def test_fields_that_do_not_change_the_forward_pass_are_recorded(tmp_path: Path):
    training = {"dropout": 0.1, "grad_checkpointing": True, "flash": True, "debug_nans": False,
                "tokenizer_name": "tinypython_2k", "enable_sparse_kernels": True, "dropout_cat_pos_emb": False,
                "bigram_table_rank": 8, "use_tied_aux_matrix": False}
    config = {**TINY, **training, "afrac": 0.25, "afrac_loctypes": "attn_in, attn_out,mlp_out"}
    write(tmp_path, config, random_state(config))
    released = oc.read_released(tmp_path)
    assert released.ignored == {**training, "afrac_loctypes (never consulted)": [" attn_out"]}
    assert released.values["afrac_loctypes"] == "attn_in,mlp_out"  # their match is exact: " attn_out" never acts
    assert released.values["bigram_table_rank"] is None and released.tokenizer_name == "tinypython_2k"
    model = oc.load(tmp_path)
    assert model.config.locations() == ("attn_in", "mlp_out")
    assert set(oc.LOCATIONS) == set(SPARSITY_LOCATIONS)  # the torch-free copy names what the model knows


@pytest.mark.parametrize("field, value, says", [
    ("rotary", True, "unknown config field(s) rotary=True"),
    ("use_tied_aux_matrix", True, "use_tied_aux_matrix=True is not supported"),
    ("activation_type", "swiglu", "activation_type='swiglu' is not supported; it must be gelu or relu"),
    ("residual_activation_type", "gelu", "residual_activation_type='gelu' is not supported"),
    ("afrac", 2, "afrac=2 is not supported"),
    ("n_layer", 0, "n_layer=0 is not supported"),
    ("rms_norm", "yes", "rms_norm='yes' is not supported; it must be true or false"),
])
def test_options_we_cannot_reproduce_are_refused_by_name(tmp_path: Path, field, value, says):
    write(tmp_path, {**TINY, field: value}, {})
    with pytest.raises(oc.CheckpointError, match="beeg_config.json") as refused:
        oc.read_config(tmp_path)
    assert says in str(refused.value)


def test_both_names_of_the_mlp_width_are_refused(tmp_path: Path):
    write(tmp_path, {**TINY, "n_mlp": 64, "d_mlp": 64}, {})
    with pytest.raises(oc.CheckpointError, match="both n_mlp and d_mlp"):
        oc.read_config(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused_by_key(tmp_path: Path):
    state = random_state(TINY)
    del state["transformer.ln_f.weight"]
    state["transformer.h.0.attn.attn_imp.sink_logit"] = torch.zeros(4)  # a sink the config does not ask for
    write(tmp_path / "keys", TINY, state)
    with pytest.raises(oc.CheckpointError, match=r"missing transformer\.ln_f\.weight; unexpected "
                                                 r"transformer\.h\.0\.attn\.sink_logit"):
        oc.load(tmp_path / "keys")
    write(tmp_path / "shape", {**TINY, "vocab_size": 65}, random_state(TINY))
    with pytest.raises(oc.CheckpointError, match="size mismatch for transformer.wte.weight"):
        oc.load(tmp_path / "shape")
    untied = {**random_state(TINY), "lm_head.weight": torch.zeros(64, 32)}
    write(tmp_path / "tied", TINY, untied)
    with pytest.raises(oc.CheckpointError, match="tied_unembed is true but transformer.wte.weight and lm_head"):
        oc.load(tmp_path / "tied")


def test_missing_files_say_what_to_put_where(tmp_path: Path):
    with pytest.raises(oc.CheckpointError) as missing:
        oc.load(tmp_path / "csp_yolo1")
    message = str(missing.value)
    assert f"{tmp_path / 'csp_yolo1' / 'beeg_config.json'} not found" in message
    assert "openai/circuit-sparsity on Hugging Face: models/<name>/" in message and "final_model.pt" in message
    (tmp_path / "beeg_config.json").write_text(json.dumps(TINY))
    with pytest.raises(oc.CheckpointError, match=r"final_model\.pt not found"):
        oc.load(tmp_path)


def write_tokenizer(directory: Path, merges: list[tuple[str, str]]) -> None:
    """A small tokenizer in the release's GPT-2 file format: the 256 bytes, then one token per merge."""
    alphabet = sorted(_CHAR_TO_BYTE)
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = 2047
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "encoder.json").write_text(json.dumps(vocab))
    (directory / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def test_tokenizer_is_read_from_the_release_files(tmp_path: Path):
    write_tokenizer(tmp_path, [("s", "e"), ("se", "l"), ("Ġ", "s")])
    tokenizer = oc.load_tokenizer(tmp_path)

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    text = "self.sel  s\n\tél"
    assert tokenizer.decode(ids(text)) == text
    assert ids("sel") == [256 + 1]
    assert ids("self") == [257, ord("f") - ord("!")]  # "sel" then "f" (printable bytes come first)
    assert ids("x<|endoftext|>")[-1] != 2047 and tokenizer.token_to_id("<|endoftext|>") == 2047  # text stays text
    assert tokenizer.decode([2047]) == "<|endoftext|>"


def ranked_bpe(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """BPE as the released tokenizer's ranks define it, written out here: a piece that is a token is that token;
    otherwise, from single bytes, merge the adjacent pair whose concatenation has the lowest rank (the leftmost on a
    tie) until no adjacent pair is a token."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while True:
        joined = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
        if not joined:
            return [ranks[part] for part in parts]
        _, i = min(joined)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def test_the_tokenizer_merges_by_rank_as_the_release_defines_it(tmp_path: Path):
    """"abc" is made from "a" + "bc", yet "ab" + "c" (adjacent once "ab" merged first) must become "abc" too; and a
    piece that is a token is taken whole. Checked against ``ranked_bpe`` on those cases and on Python source."""
    merges = [("a", "b"), ("b", "c"), ("a", "bc"), ("abc", "d"), ("Ġ", "a"), ("Ġa", "b"), ("d", "e"), ("de", "f"),
              ("Ġ", "de"), ("r", "e"), ("re", "t"), ("Ġ", "ret"), ("Ġret", "u"), ("Ġretu", "r"), ("Ġretur", "n")]
    write_tokenizer(tmp_path, merges)
    tokenizer = oc.load_tokenizer(tmp_path)
    ranks = {bytes(_CHAR_TO_BYTE[c] for c in token): rank
             for token, rank in json.loads((tmp_path / "encoder.json").read_text()).items() if token != "<|endoftext|>"}
    texts = ["abcab", "xabcd", " abc def", "    return x\n", Path(oc.__file__).read_text()[:4000]]
    for text in texts:
        pieces = tokenizer.pre_tokenizer.pre_tokenize_str(text)
        expected = [i for piece, _ in pieces for i in ranked_bpe(ranks, bytes(_CHAR_TO_BYTE[c] for c in piece))]
        assert tokenizer.encode(text, add_special_tokens=False).ids == expected, text
    assert tokenizer.encode("xabcd", add_special_tokens=False).tokens == ["x", "abcd"]


def test_tokenizer_files_that_disagree_are_refused(tmp_path: Path):
    write_tokenizer(tmp_path, [("s", "e")])
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\ns e\nx y\n")  # a merge encoder.json has no token for
    with pytest.raises(oc.CheckpointError, match="disagree: 257 tokens"):
        oc.load_tokenizer(tmp_path)
    write_tokenizer(tmp_path, [("s", "e"), ("e", "s")])
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\ne s\ns e\n")  # listed out of rank order
    with pytest.raises(oc.CheckpointError, match="do not make the token"):
        oc.load_tokenizer(tmp_path)


def test_candidates_are_read_in_each_models_tokenizer(tmp_path: Path):
    """The bracket task's candidates are read as OpenAI's "]\\n" / "]]\\n" where a tokenizer has both as single
    tokens (every pair's brackets end their line, so that is the token such a tokenizer cuts there), as "]" / "]]"
    in the organisms' tokenizer, and refused, naming the task, the candidate and how it splits, where neither is."""
    from precompute.lm.task_check import candidate_ids
    from precompute.lm.tokenizer import load_tokenizer

    bracket = TASKS["bracket_counting"]
    (form,) = bracket.forms
    for which in SPLITS:  # each form is its candidate and how every pair goes on after it
        for pair in split(bracket, which, 200):
            assert (pair.correct + pair.rest).startswith(form[bracket.candidates.index(pair.correct)]), pair
    write_tokenizer(tmp_path / "theirs", [("]", "Ċ"), ("]", "]"), ("]]", "Ċ")])
    theirs = oc.load_tokenizer(tmp_path / "theirs")
    assert candidate_ids(bracket, theirs) == {"]": 256, "]]": 258}
    ours = load_tokenizer()
    assert candidate_ids(bracket, ours) == {text: ours.token_to_id(text) for text in bracket.candidates}

    write_tokenizer(tmp_path / "bytes", [("]", "Ċ")])
    with pytest.raises(ValueError) as refused:
        candidate_ids(bracket, oc.load_tokenizer(tmp_path / "bytes"))
    assert str(refused.value).startswith("task 'bracket_counting': candidate ']]' is 2 tokens (']' + ']') in this "
                                         "model's tokenizer, not one (nor is each of its forms ']\\n' / ']]\\n' one "
                                         "token)")


def test_a_missing_tokenizer_says_which_files_to_fetch_and_where(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ATLASCOPE_WEIGHTS_DIR", str(tmp_path / "shared"))
    model_dir = tmp_path / "models" / "csp_yolo2"
    with pytest.raises(oc.CheckpointError) as missing:
        oc.load_tokenizer(model_dir)
    message = str(missing.value)
    assert "encoder.json and vocab.bpe" in message and oc.TOKENIZER_URL in message and str(model_dir) in message
    write_tokenizer(tmp_path / "shared" / "tinypython", [])  # found through $ATLASCOPE_WEIGHTS_DIR
    assert oc.tokenizer_files(model_dir)[0] == tmp_path / "shared" / "tinypython" / "encoder.json"
    write_tokenizer(tmp_path / "tinypython", [])  # the release's own layout comes first
    assert oc.tokenizer_files(model_dir)[0] == tmp_path / "tinypython" / "encoder.json"


def test_registry_entry_takes_its_layers_from_the_config(tmp_path: Path):
    config = {**TINY, "d_head": 16, "d_mlp": 48, "rms_norm": True}
    model_dir = write(tmp_path / "csp_yolo1", config, random_state(config))
    write_tokenizer(model_dir, [("s", "e")])
    spec = get_model("openai-csp", model_dir)
    assert spec.slug == "openai-csp_yolo1" and spec.weights == model_dir and spec.kind == "language"
    widths = {layer.name: layer.units for layer in spec.layers}
    assert widths["0.attn.q"] == 64 and widths["1.mlp.post_act"] == 48 and widths["1.resid_post"] == 32
    model = spec.load()
    assert set(widths) <= set(model.hook_points())
    sample = spec.dataset_sample()  # the committed held-out text, in the released tokenizer
    assert sample.tokens.max() <= 2047 and sample.meta["tokenizer"] == "tinypython_2k"
    start, end = sample.documents[0][1], sample.documents[1][1]
    assert oc.load_tokenizer(model_dir).decode(sample.tokens[start:end - 1].tolist()).strip()
    with pytest.raises(KeyError, match="needs --weights DIR"):
        get_model("openai-csp")
    with pytest.raises(KeyError, match="comes with its weights"):
        get_model("tinyvision", model_dir)


@pytest.mark.parametrize("runner", ["base", "no_torch"])
def test_cli_refuses_a_missing_directory_before_importing_torch(tmp_path: Path, runner: str):
    args = ["precompute", "openai-csp", "--weights", str(tmp_path / "nowhere"), "--atlas", str(tmp_path / "atlas")]
    done = atlascope(*args, timeout=60) if runner == "base" else subprocess.run(
        [*NO_TORCH, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "beeg_config.json not found" in lines[0]
    assert not (tmp_path / "atlas").exists()


# --- circuits of a released checkpoint, end to end ------------------------------------------------------------------

QUOTE_TASK = "single_double_quote"
PRUNING = ["--prune-steps", "10", "--k-coef", "1e-3", "--tokens", "4096"]  # two settings, few steps, a short pass


def trained_tokenizer(directory: Path) -> None:
    """A 512-token BPE trained by the organisms' trainer (``precompute.lm.tokenizer.train``, whose pre-tokenizer
    never merges a quote with anything else) on the quote task's texts, written in the release's GPT-2 file format.
    No text it learns from holds "]]", which stays two tokens."""
    from precompute.lm.tokenizer import train

    task = TASKS[QUOTE_TASK]
    trained = train([pair.prompt + pair.correct + pair.rest for which in SPLITS for pair in split(task, which, 300)],
                    vocab_size=512)
    merges = json.loads(trained.to_str())["model"]["merges"]  # ["left right", ...] or [[left, right], ...]
    write_tokenizer(directory, [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges])


def released(directory: Path, model) -> Path:
    """``model`` (a ``SparseGPT``) written in the released layout: its config under the release's field names as
    ``beeg_config.json``, its state dict (whose names are the release's) as ``final_model.pt``."""
    config = {name: value for name, value in model.config.to_dict().items() if name in oc.THEIR_DEFAULTS}
    return write(directory, config, model.state_dict())


def quote_model(tokenizer, dense: bool):
    """A one-block GPT built by hand to close strings, in 2,048 tokens of ``tokenizer`` (whose tokens hold one kind
    of quote at most): the embedding marks a token holding a quote (channel 1) and its kind (channel 2, +1 for a
    double quote), the position table counts positions (channel 3); the one head's key is "a quote, the later the
    better", so its constant query finds the string's opening quote (the last quote of any prompt), and its value,
    the quote's kind, is written to channel 4, which the unembedding reads as the two quotes' logits. ``dense``:
    every other weight a little noise, so it is a dense model doing the same."""
    from precompute.lm.model import GPTConfig, SparseGPT
    from precompute.lm.tokenizer import token_texts

    double, single = tokenizer.token_to_id('"'), tokenizer.token_to_id("'")
    texts = token_texts(tokenizer, range(tokenizer.get_vocab_size() - 1))  # every token but <|endoftext|>
    config = GPTConfig(vocab_size=2048, block_size=256, n_layer=1, n_head=1, d_head=4, d_model=8, d_mlp=8,
                       bias=False, rms_norm=True, afrac=None, tied_unembed=False, enable_bigram_table=False,
                       learnable_bigram_table=False, position_embedding=True)
    model = SparseGPT(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # norm gains 1 (RMSNorm alone), every matrix zero or a little noise
            is_gain = parameter.dim() == 1
            parameter.copy_(torch.ones_like(parameter) if is_gain else 1e-3 * torch.randn(
                parameter.shape, generator=generator) if dense else torch.zeros_like(parameter))
        embed = model.transformer.wte.weight  # [vocab, d_model]
        embed[:, 0] = 1.0
        for token, text in enumerate(texts):
            if '"' in text or "'" in text:
                embed[token, 1:3] = torch.tensor([1.0, 1.0 if '"' in text else -1.0])
        model.transformer.wpe.weight[:, 3] = torch.arange(256) / 256  # [block_size, d_model]
        qkv = model.transformer.h[0].attn.c_attn.weight  # [3 * d_attn, d_model]: q rows 0-3, k 4-7, v 8-11
        qkv[0, 0], qkv[4, 1], qkv[4, 3], qkv[8, 2] = 1.0, 60.0, 40.0, 1.0
        model.transformer.h[0].attn.c_proj.weight[4, 0] = 1.0  # [d_model, d_attn]
        model.lm_head.weight[double, 4], model.lm_head.weight[single, 4] = 0.75, -0.75  # [vocab, d_model]
    return model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release as downloaded: ``models/csp_quote`` (weight-sparse), ``models/dense1_quote`` (its dense baseline)
    and ``tinypython/`` with a tokenizer in the release's GPT-2 file format."""
    root = tmp_path_factory.mktemp("release")
    trained_tokenizer(root / "tinypython")
    tokenizer = oc.load_tokenizer(root / "tinypython")
    released(root / "models" / "csp_quote", quote_model(tokenizer, dense=False))
    released(root / "models" / "dense1_quote", quote_model(tokenizer, dense=True))
    return root


def in_process(*args: str):
    """``atlascope ARGS`` run in this process, which has torch imported already; its result."""
    from typer.testing import CliRunner

    from precompute.cli import app

    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})


@pytest.fixture(scope="module")
def circuit_atlas(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    atlas = tmp_path_factory.mktemp("released") / "atlas"
    for name in ("csp_quote", "dense1_quote"):
        done = in_process("precompute", "openai-csp", "--weights", str(release / "models" / name), "--atlas",
                          str(atlas), "--tasks", QUOTE_TASK, "--device", "cpu", *PRUNING)
        assert done.exit_code == 0, (done.stderr, done.exception)
    return atlas


def test_a_downloaded_release_is_read_whole(release: Path, tmp_path: Path):
    """--weights may name the release as downloaded: its one model, or, when it holds several, an error naming
    each; the tokenizer is found in the release's tinypython/ beside models/."""
    with pytest.raises(oc.CheckpointError, match="holds 2 released models; name one: --weights .*csp_quote"):
        get_model("openai-csp", release)
    shutil.copytree(release / "tinypython", tmp_path / "tinypython")
    shutil.copytree(release / "models" / "csp_quote", tmp_path / "models" / "csp_quote")
    spec = get_model("openai-csp", tmp_path)
    assert spec.slug == "openai-csp_quote" and spec.weights == tmp_path / "models" / "csp_quote"
    assert spec.load_tokenizer().get_vocab() == oc.load_tokenizer(release / "tinypython").get_vocab()


def test_the_hand_built_model_closes_strings_as_released(release: Path):
    from precompute.lm.evaluate import task_metrics

    task = TASKS[QUOTE_TASK]
    model_dir = release / "models" / "csp_quote"
    scores = task_metrics(oc.load(model_dir), oc.load_tokenizer(model_dir), task, split(task, "eval", 400))
    assert scores["accuracy"] == 1.0 and scores["loss"] < 0.15


def test_circuits_of_released_checkpoints_are_pruned_saved_and_served(circuit_atlas: Path):
    """``atlascope precompute openai-csp`` finds the quote circuit of a released sparse model and of its dense
    baseline with their own tokenizer, and the server answers the circuit page, its twin, its circuit-tracer JSON
    and the comparison of the two."""
    import httpx

    from tests.conftest import serving
    from tests.test_server import assert_twin

    sparse, dense = "openai-csp_quote", "openai-dense1_quote"
    with serving(circuit_atlas) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = assert_twin(client, f"/models/{sparse}/circuits/{QUOTE_TASK}")
        assert body["met"] and body["config"]["candidate_tokens"] == ['"', "'"]
        assert body["faithfulness"]["full"]["accuracy"] == 1.0 and body["config"]["mean_tokens"] == 4096
        # what the model was built from: the reads of "a quote", its kind and the position, the key, the value and
        # the channel the head writes (the query is a constant, which its mean stands in for)
        assert {(node["layer"], node["index"]) for node in body["nodes"]} == {
            ("0.attn.act_in", 1), ("0.attn.act_in", 2), ("0.attn.act_in", 3), ("0.attn.k", 0), ("0.attn.v", 0),
            ("0.attn.out", 4)}
        assert all(node["url"] == f"/models/{sparse}/{node['layer']}/{node['index']}" for node in body["nodes"])
        graph = client.get(f"/models/{sparse}/circuits/{QUOTE_TASK}/graph.json")
        assert graph.status_code == 200 and len(graph.json()["nodes"]) >= body["n_nodes"]
        compared = assert_twin(client, f"/circuits/{QUOTE_TASK}")
        assert {row["model"]["slug"]: row["weights"] for row in compared["circuits"]} == {sparse: "sparse",
                                                                                          dense: "dense"}
        [pair] = compared["pairs"]
        assert (pair["dense"]["slug"], pair["sparse"]["slug"]) == (dense, sparse)
        card = assert_twin(client, f"/models/{sparse}")["model"]["card"]
        assert card["tokenizer"]["name"] == "tinypython_2k" and card["sparsity"]["weights"] == "sparse"


def test_a_candidate_that_is_two_tokens_of_the_released_tokenizer_is_refused(release: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    done = in_process("precompute", "openai-csp", "--weights", str(release / "models" / "csp_quote"), "--atlas",
                      str(atlas), "--tasks", "bracket_counting")
    assert done.exit_code == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: task 'bracket_counting': candidate ']]' is 2 tokens "
                                                   "(']' + ']')"), done.stderr
    assert "openai-csp_quote" in lines[0] and not atlas.exists()
