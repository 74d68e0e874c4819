"""Checks of the model before any weight loads (hydratune.preflight.check_model, from the safetensors
headers): the path exists, peft.config.target_modules names real modules, and 4-bit quantization can block
every quantized dimension; and the shipped model trains 4-bit on this CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT, batch_samples, compose, fit_repeated, make_module

from hydratune.config import canonical_dtype, to_plain
from hydratune.data.collate import PadCollator
from hydratune.errors import UserError
from hydratune.preflight import check_config

SHIPPED = ROOT / "assets" / "tiny-llama"
SKIP_ODD = "+quantization.config.llm_int8_skip_modules=[down_proj,lm_head]"


@pytest.fixture(scope="module")
def odd_model_dir(tmp_path_factory):
    """A tiny Llama whose MLP width (96) is not a multiple of bitsandbytes' 4-bit block (64)."""
    from hydratune.tiny import save_random_model

    return save_random_model(
        tmp_path_factory.mktemp("odd"), seed=0, num_hidden_layers=1, hidden_size=64, intermediate_size=96
    )


def _cfg(model_dir, *overrides: str) -> dict:
    return to_plain(compose([f"model.pretrained_model_name_or_path={model_dir}", *overrides]))


@pytest.mark.parametrize("quantization", ["nf4", "fp4", "int4"])
def test_4bit_of_a_dimension_bitsandbytes_cannot_block_is_one_line_with_the_fix(odd_model_dir, quantization):
    with pytest.raises(UserError) as caught:
        check_config(_cfg(odd_model_dir, f"quantization={quantization}"))
    message = str(caught.value)
    assert "model.layers.0.mlp.down_proj maps 96 inputs to 64 outputs;" in message  # gate/up: 64 to 96 pass
    assert "inputs a multiple of 64 and outputs of 32" in message
    assert "quantization=int8" in message and SKIP_ODD.lstrip("+") in message
    check_config(_cfg(odd_model_dir, "quantization=int8"))  # the fixes it names pass
    check_config(_cfg(odd_model_dir, f"quantization={quantization}", SKIP_ODD))
    # A skip list replaces transformers' default one (the output layer): lm_head, 100 outputs, then counts.
    with pytest.raises(UserError, match="lm_head maps 64 inputs to 100 outputs"):
        check_config(
            _cfg(
                odd_model_dir,
                f"quantization={quantization}",
                "+quantization.config.llm_int8_skip_modules=[down_proj]",
            )
        )


def test_the_skip_list_it_suggests_trains_4bit_on_this_cpu(odd_model_dir, tokenizer):
    import bitsandbytes as bnb

    module = make_module(odd_model_dir, peft="qlora", overrides=[SKIP_ODD])
    module.configure_model()
    four_bit = {
        n.removesuffix(".base_layer").rpartition(".")[2]
        for n, m in module.model.named_modules()
        if isinstance(m, bnb.nn.Linear4bit)
    }
    assert four_bit == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"}  # down_proj: as asked
    losses = fit_repeated(module, PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer)), steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    _evaluate(module.model, tokenizer)


def _evaluate(model, tokenizer) -> None:
    """A forward pass without gradients, as validation and generation run: where bitsandbytes repacks 4-bit
    weights for its CPU kernel on AVX512-BF16 CPUs (training forwards do not)."""
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer("upper: abc -> ").input_ids])).logits
    assert torch.isfinite(logits).all()


def test_shipped_model_blocks_by_64_and_passes():
    for quantization in ("nf4", "fp4"):
        check_config(_cfg(SHIPPED, "peft=qlora", f"quantization={quantization}", "optimizer=adamw_8bit"))


@pytest.mark.parametrize("quantization", ["nf4", "fp4"])
def test_shipped_model_trains_4bit_with_the_8bit_optimizer(quantization, tokenizer):
    """`python train.py peft=qlora optimizer=adamw_8bit`'s model and optimizer, in process (on an AVX512-BF16
    CPU bitsandbytes repacks the 4-bit weights for its kernel: the shipped model's 352 broke it)."""
    module = make_module(
        SHIPPED, optimizer="adamw_8bit", peft="qlora", overrides=[f"quantization={quantization}"]
    )
    module.configure_model()
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    losses = fit_repeated(module, batch, steps=2)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    _evaluate(module.model, tokenizer)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("[all]", None),
        ("[all-linear]", None),
        ("all-linear", None),
        ("[q_proj,v_proj]", None),
        ("[q_proj,attn,mlp.fc1]", "no module named attn, mlp.fc1; available: down_proj, embed_tokens"),
    ],
)
def test_target_modules_are_checked_against_the_model(tiny_model_dir, targets, expected):
    cfg = _cfg(tiny_model_dir, f"peft.config.target_modules={targets}")
    if expected is None:
        check_config(cfg)
    else:
        with pytest.raises(UserError, match=rf"peft.config.target_modules: the model has {expected}"):
            check_config(cfg)


def test_all_becomes_peft_all_linear(tiny_model_dir):
    from hydratune.model import lora_targets

    assert lora_targets(["all"]) == lora_targets("all") == lora_targets(["all-linear"]) == "all-linear"
    assert lora_targets(["q_proj"]) == ["q_proj"]
    module = make_module(tiny_model_dir, overrides=["peft.config.target_modules=[all]"])
    module.configure_model()
    wrapped = {
        n.split(".lora_A")[0].rpartition(".")[2] for n, _ in module.model.named_parameters() if "lora_A" in n
    }
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize(
    "name",
    ["/nonexistent/model", "./typo-model", "~/no-such-model", "outputs/run/model"],
)
def test_a_model_path_not_on_disk_is_one_line(name):
    cfg = to_plain(compose([]))
    cfg["model"]["pretrained_model_name_or_path"] = name
    with pytest.raises(UserError, match=rf"model.pretrained_model_name_or_path={name}: no such folder"):
        check_config(cfg)


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))
def test_every_shipped_model_option_composes_and_an_uncached_one_is_one_line(option, tmp_path):
    """model=NAME for each conf/model option: it composes, and a hub model this machine has not cached is one line
    before anything loads (the hubs are offline in tests)."""
    cfg = to_plain(compose([f"model={option}"]))
    cfg["model"]["cache_dir"] = str(tmp_path)  # an empty cache: none is here
    name = cfg["model"]["pretrained_model_name_or_path"]
    if (ROOT / str(name).replace("${paths.assets_dir}", "assets")).is_dir() or Path(name).is_dir():
        check_config(cfg)  # the shipped tiny model
        return
    with pytest.raises(UserError, match=rf"{name}: not a folder on this disk and not in the hub cache"):
        check_config(cfg)


def test_an_uncached_hub_model_while_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = to_plain(compose(["model.pretrained_model_name_or_path=hydratune-tests/no-such-model"]))
    cfg["model"]["cache_dir"] = str(tmp_path)
    with pytest.raises(
        UserError, match="hydratune-tests/no-such-model: not a folder on this disk and not in the hub cache"
    ):
        check_config(cfg)
    # a revision: named, and the download advice fetches it, not main again (review T13)
    cfg["model"]["revision"] = "v2"
    with pytest.raises(UserError) as caught:
        check_config(cfg)
    assert "not in the hub cache at revision v2, and the hub is offline" in str(caught.value)
    assert "(hf download hydratune-tests/no-such-model --revision v2)" in str(caught.value)
    # the tokenizer loader (generate, merge, training past the checks): one line, not transformers' traceback
    from hydratune.model import load_tokenizer

    with pytest.raises(UserError) as caught:
        load_tokenizer({"pretrained_model_name_or_path": "hydratune-tests/no-such-model"})
    assert str(caught.value).startswith("model.pretrained_model_name_or_path=hydratune-tests/no-such-model: ")
    assert str(caught.value).endswith("to fetch it: hf download hydratune-tests/no-such-model")
    with pytest.raises(UserError, match=rf"={tmp_path}: ") as caught:  # a folder without a tokenizer
        load_tokenizer({"pretrained_model_name_or_path": str(tmp_path)})
    assert "hf download" not in str(caught.value)
    from hydratune.model import load_model  # the weights alike (review N1)

    with pytest.raises(UserError) as caught:
        load_model({"pretrained_model_name_or_path": "hydratune-tests/no-such-model"})
    assert str(caught.value).endswith("to fetch it: hf download hydratune-tests/no-such-model")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("bf16", "bfloat16"), ("bfloat16", "bfloat16"), ("fp16", "float16"), ("half", "float16"),
     ("float16", "float16"), ("fp32", "float32"), ("float32", "float32"), ("auto", "auto")],
)  # fmt: skip
def test_dtype_aliases_have_one_canonical_name(name, canonical, tiny_model_dir, tmp_path):
    import json

    from hydratune.export import merge_dtype
    from hydratune.model import torch_dtype
    from hydratune.rules import violations

    assert canonical_dtype(name) == canonical
    adapter = tmp_path / "adapter"  # auto: the base checkpoint's own (the tiny model's float32)
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert merge_dtype(adapter, name) == ("float32" if canonical == "auto" else canonical)
    assert torch_dtype(name) == ("auto" if canonical == "auto" else getattr(torch, canonical))
    cfg = to_plain(compose(["peft=none", "trainer.precision=16-mixed", f"model.dtype={name}"]))
    mixes = any(v.startswith("trainer.precision, model.dtype, peft") for v in violations(cfg))
    assert mixes == (canonical == "bfloat16")  # the fp16_with_bf16 rule knows every bf16 spelling


def test_a_max_seq_length_past_the_models_positions_is_checked_before_loading(
    tiny_model_dir, tmp_path, caplog
):
    """A model with a table of learned positions (an encoder's position_embeddings) fails at the first row
    longer than it, hours into a run: refused before loading. A rotary model trains on positions it never saw:
    a warning with the fix. rope_scaling in its config.json stretches them: no word."""
    import json
    import shutil

    from hydratune.tiny import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "encoder")  # 512 positions
    topics = ["task=classification", "dataset=topics"]
    check_config(_cfg(encoder, *topics, "dataset.max_seq_length=512"))
    with pytest.raises(UserError) as error:
        check_config(_cfg(encoder, *topics, "dataset.max_seq_length=1000"))
    message = str(error.value)
    assert message.startswith("dataset.max_seq_length=1000 is longer than the 512 positions the model has")
    assert "position_embeddings.weight holds one row per position" in message
    assert message.endswith("lower it (dataset.max_seq_length=512)") and "\n" not in message

    with caplog.at_level("WARNING", logger="hydratune.preflight"):
        check_config(_cfg(tiny_model_dir, "dataset.max_seq_length=1024"))
        assert not caplog.text
        check_config(_cfg(tiny_model_dir, "dataset.max_seq_length=2048"))
    assert (
        "dataset.max_seq_length=2048 is longer than the 1024 positions the model was trained on"
        in caplog.text
    )
    assert "lower it (dataset.max_seq_length=1024), or give the model a rope_scaling" in caplog.text

    stretched = tmp_path / "stretched"
    shutil.copytree(tiny_model_dir, stretched)
    config = json.loads((stretched / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (stretched / "config.json").write_text(json.dumps(config))
    caplog.clear()
    with caplog.at_level("WARNING", logger="hydratune.preflight"):
        check_config(_cfg(stretched, "dataset.max_seq_length=2048"))
    assert not caplog.text


def test_a_model_class_without_sdpa_runs_eager_and_says_so_once(tmp_path, tiny_model_dir, caplog):
    """Gemma 2 has no sdpa attention in transformers 5: the default model.attn_implementation=sdpa raised a
    traceback once the model loaded, and preflight said ok (review T5). It is eager now, said once (by preflight's
    full data check, which loads transformers, or by training); the quick checks pass it."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from hydratune import model as loader
    from hydratune.preflight import check_model

    folder = tmp_path / "gemma2"
    config = Gemma2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    Gemma2ForCausalLM(config).save_pretrained(folder)
    loader._SAID_EAGER.clear()
    with caplog.at_level("WARNING", logger="hydratune.model"):
        check_model(_cfg(folder, "peft=none"))
        model = loader.load_model({"pretrained_model_name_or_path": str(folder)})
    assert model.config._attn_implementation == "eager"
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "model.attn_implementation=sdpa: Gemma2ForCausalLM has no sdpa attention in this transformers, so eager is "
        "used (set model.attn_implementation=eager to choose it)"
    ]
    assert loader.attention({"pretrained_model_name_or_path": str(tiny_model_dir)}) == "sdpa"  # Llama has it
    assert (
        loader.attention({"pretrained_model_name_or_path": str(folder), "attn_implementation": "eager"})
        == "eager"
    )


def test_a_sentencepiece_only_tokenizer_without_the_package_is_one_line(tmp_path):
    """A checkpoint with a tokenizer.model and no tokenizer.json (Llama 2, Mistral v0.1 derivatives) failed with
    transformers' traceback asking for tiktoken (review T6); sentencepiece is not among the locked packages."""
    import json
    import shutil

    from hydratune.model import load_tokenizer

    shutil.copy(SHIPPED / "config.json", tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x00 a SentencePiece model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(UserError) as caught:
        load_tokenizer({"pretrained_model_name_or_path": str(tmp_path)})
    assert str(caught.value) == (
        f"model.pretrained_model_name_or_path={tmp_path}: its tokenizer is a SentencePiece tokenizer.model with no "
        "tokenizer.json, which needs the sentencepiece package: pip install sentencepiece (or use a copy of the "
        "model that has tokenizer.json)"
    )


def test_the_hubs_are_offline_in_this_test_process():
    """conftest set HF_HUB_OFFLINE after importing Lightning, which imports huggingface_hub: the hub read it as
    unset and every test process was online (an adapter whose base was missing waited ~50 s on the network)."""
    import datasets.config
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE


def test_an_uncached_hub_model_with_no_route_to_the_hub_is_one_line_at_once(monkeypatch, tmp_path):
    """With HF_HUB_OFFLINE unset and no network, the hub's client retried for ~50 s and then raised a traceback
    (review N1). A hub host that does not resolve, with no proxy set, is one line before anything loads; behind a
    proxy, or when the name resolves, the hub is asked as before."""
    import socket

    from hydratune import hub

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(var, raising=False)
    looked_up = []

    def no_dns(host, port, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    cfg = to_plain(compose(["model.pretrained_model_name_or_path=hydratune-tests/no-such-model"]))
    cfg["model"]["cache_dir"] = str(tmp_path)
    with pytest.raises(UserError) as caught:
        check_config(cfg)
    message = str(caught.value)
    assert message.startswith(
        "model.pretrained_model_name_or_path=hydratune-tests/no-such-model: not a folder"
    )
    assert (
        "huggingface.co does not resolve on this machine (Name or service not known; no network?)" in message
    )
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message and looked_up == ["huggingface.co"]
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")  # a mirror is the host looked up
    assert hub.hub_unreachable().startswith("hub.example.org does not resolve")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # the proxy resolves names: not ours to judge
    assert hub.hub_unreachable() is None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])  # resolves: the hub is asked
    assert hub.hub_unreachable() is None
    assert hub.hub_folder("hydratune-tests/no-such-model", "model.x", cache_dir=str(tmp_path)) is None


def test_a_cached_hub_model_with_no_route_to_the_hub_reads_the_cache_only(monkeypatch, tmp_path, caplog):
    """A cached hub model with HF_HUB_OFFLINE unset and no network: transformers asked the hub for each file and
    waited out its retries (about 3 minutes for the tiny model, review N1). The process now reads the cache only,
    as HF_HUB_OFFLINE=1 would, and says why."""
    import logging
    import os
    import shutil
    import socket

    import huggingface_hub.constants

    from hydratune import hub

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_CACHE_ONLY", [])
    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / ("c" * 40)
    shutil.copytree(ROOT / "assets" / "tiny-llama", snapshot)
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("c" * 40)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with caplog.at_level(logging.INFO, logger="hydratune.hub"):
        assert hub.hub_folder("acme/tiny", "model.x", cache_dir=str(tmp_path)) == snapshot
    assert "model.x=acme/tiny: huggingface.co does not resolve on this machine" in caplog.text
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    from transformers import AutoTokenizer  # no hub call: it would fail on the DNS stand-in above

    assert AutoTokenizer.from_pretrained("acme/tiny", cache_dir=str(tmp_path)).vocab_size > 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hydratune.hub"):  # the run's log says it again
        hub.hub_folder("acme/tiny", "model.x", cache_dir=str(tmp_path))
    assert "reading its hub cache only" in caplog.text
