"""Long and weighted prompts (issue 14 part 2): A1111 and compel syntax, compel's own embeddings,
plain prompts that fit encoded exactly as before, SD 1.x/2.x/XL and the mini model's 32-token window."""

import pytest
import torch
from compel import CompelForSD, CompelForSDXL

from controlnet.errors import InputError
from controlnet.pipeline import ControlPipeline
from controlnet.pipeline.prompts import a1111_fragments, parse_prompt
from controlnet.pipeline.text import encode_prompts, encode_sd, encode_sdxl
from tiny_models import tiny_pipeline

LONG = "a red cube on a blue floor, " * 6 + "and at the very end a green sphere"  # > 77 byte tokens


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def sd(request):
    return tiny_pipeline(request.param)


@pytest.fixture(scope="module")
def xl():
    return tiny_pipeline("sdxl")


def ours_sd(pipe, prompt, negative=""):
    states, added = encode_prompts([pipe.text_encoder], [pipe.tokenizer], [prompt], [negative], True)
    assert added is None
    return states[1:], states[:1]


def ours_xl(pipe, prompt, negative="ugly"):
    states, added = encode_prompts([pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2],
                                   [prompt], [negative], True)
    pooled = added["text_embeds"]
    return states[1:], states[:1], pooled[1:], pooled[:1]


# ------------------------------------------------------------------------------------- syntax


@pytest.mark.parametrize("prompt, expected", [
    ("a (cat:1.3) dog", [("a ", 1.0), ("cat", 1.3), (" dog", 1.0)]),
    ("a (cat) dog", [("a ", 1.0), ("cat", 1.1), (" dog", 1.0)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("a [cat]", [("a ", 1.0), ("cat", 1 / 1.1)]),
    ("(a (b:1.5):1.2)", [("a ", 1.2), ("b", 1.5 * 1.2)]),
    (r"a \(literal\) [x", [("a (literal) ", 1.0), ("x", 1 / 1.1)]),  # escaped brackets; unclosed [ runs to the end
    ("stray ) and : colon", [("stray ) and : colon", 1.0)]),
    ("(x:0.5) (y:0.5)", [("x", 0.5), (" ", 1.0), ("y", 0.5)]),
])
def test_a1111_fragments_follow_the_web_ui(prompt, expected):
    got = a1111_fragments(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize("prompt", ["a red cube", "", "a t-shirt, well-known: 1+1=2", "a,b. c", "v1.5 e.g. cat"])
def test_plain_prompts_have_no_syntax(prompt):
    assert parse_prompt(prompt) is None


def weights(conjunction):
    return [(f.text, round(f.weight, 4)) for p in conjunction.prompts for f in p.children]


def test_compel_syntax_is_read_by_compel_and_a1111_syntax_by_us():
    assert weights(parse_prompt("a cat++ dog")) == [("a", 1.0), ("cat", 1.21), ("dog", 1.0)]
    assert weights(parse_prompt("a (red cat)1.3")) == [("a", 1.0), ("red cat", 1.3)]
    assert weights(parse_prompt("a (red cat:1.3)")) == [("a ", 1.0), ("red cat", 1.3)]
    broken = parse_prompt("a BREAK b")
    assert len(broken.prompts) == 2 and weights(broken) == [("a", 1.0), ("b", 1.0)]


@pytest.mark.parametrize("prompt, words", [("a (cat:-1)", "negative"), ("a cat.swap(dog)", ".swap()"),
                                           ("withLora(x, 0.5) cat", "withLora")])
def test_syntax_we_cannot_honour_is_refused(prompt, words):
    with pytest.raises(InputError, match=words):
        parse_prompt(prompt)


# ------------------------------------------------------------------------------------- SD 1.x / 2.x


def test_plain_prompts_are_encoded_exactly_as_before(sd):
    te, tok = sd.text_encoder, sd.tokenizer
    prompts, negatives = ["a red cube", "two blue spheres, far apart"], ["ugly", ""]
    states, _ = encode_prompts([te], [tok], prompts, negatives, True)
    assert torch.equal(states, torch.cat([encode_sd(te, tok, negatives), encode_sd(te, tok, prompts)]))
    alone, _ = encode_prompts([te], [tok], prompts, negatives, False)
    assert torch.equal(alone, encode_sd(te, tok, prompts))


@pytest.mark.parametrize("prompt, negative", [("a (red)1.3 cube", "ugly"), ("a red++ cube", ""), (LONG, "ugly--"),
                                              ("short", LONG), ("a red cube", "")])
def test_sd_embeddings_equal_compels_own(sd, prompt, negative):
    cond, neg = ours_sd(sd, prompt, negative)
    theirs = CompelForSD(sd)(prompt, negative_prompt=negative)
    assert torch.equal(cond, theirs.embeds) and torch.equal(neg, theirs.negative_embeds)


def test_a1111_weights_equal_compels_for_the_same_weights(sd):
    assert torch.equal(ours_sd(sd, "a (red:1.3) [cube]")[0], CompelForSD(sd)("a (red)1.3 (cube)0.9090909090909091").embeds)


def test_long_prompts_keep_their_end_and_weights_change_the_embedding(sd):
    cond, neg = ours_sd(sd, LONG)
    assert cond.shape[1] == 3 * 77 and neg.shape == cond.shape  # the short negative padded with an empty chunk
    other_end, _ = ours_sd(sd, LONG.replace("green sphere", "black pyramid"))
    assert not torch.equal(cond, other_end)  # today's truncation made these equal
    assert torch.equal(encode_sd(sd.text_encoder, sd.tokenizer, [LONG]), encode_sd(sd.text_encoder, sd.tokenizer,
                                                                                  [LONG.replace("green sphere", "black pyramid")]))
    plain = ours_sd(sd, "a red cube")[0]
    for weighted in ("a (red:1.5) cube", "a red-- cube"):
        assert not torch.allclose(ours_sd(sd, weighted)[0], plain)


# ------------------------------------------------------------------------------------- SDXL


def test_sdxl_plain_prompts_exactly_as_before_and_empty_negative_is_zeros(xl):
    encoders, tokenizers = [xl.text_encoder, xl.text_encoder_2], [xl.tokenizer, xl.tokenizer_2]
    states, added = encode_prompts(encoders, tokenizers, ["a red cube"], ["ugly"], True)
    neg, neg_pooled = encode_sdxl(encoders, tokenizers, ["ugly"])
    cond, pooled = encode_sdxl(encoders, tokenizers, ["a red cube"])
    assert torch.equal(states, torch.cat([neg, cond])) and torch.equal(added["text_embeds"], torch.cat([neg_pooled, pooled]))
    states, added = encode_prompts(encoders, tokenizers, [LONG], [""], True, zero_empty_negative=True)
    assert states.shape[1] == 3 * 77 and not states[0].any() and not added["text_embeds"][0].any()


@pytest.mark.parametrize("prompt, negative", [("a (red)1.3 cube", "ugly"), (LONG, "ugly"), ("a red cube", LONG + "+")])
def test_sdxl_embeddings_and_pooled_equal_compels_own(xl, prompt, negative):
    cond, neg, pooled, neg_pooled = ours_xl(xl, prompt, negative)
    theirs = CompelForSDXL(xl)(prompt, negative_prompt=negative)
    assert torch.equal(cond, theirs.embeds) and torch.equal(neg, theirs.negative_embeds)
    assert torch.equal(pooled, theirs.pooled_embeds) and torch.equal(neg_pooled, theirs.negative_pooled_embeds)


# ------------------------------------------------------------------------------------- pictures


def old_encode_prompt(self, prompts, negatives, guided):
    """The pipeline's prompt encoding before compel (SD)."""
    cond = encode_sd(self.text_encoder, self.tokenizer, prompts)
    return (torch.cat([encode_sd(self.text_encoder, self.tokenizer, negatives), cond]) if guided else cond), None


def test_pictures_plain_prompts_as_before_long_and_weighted_ones_change(monkeypatch):
    ours = ControlPipeline.from_diffusers(tiny_pipeline("sd1"))

    def sample(prompt):
        return ours(prompt, [], steps=2, width=32, height=32, seed=3, output_type="latent", progress=False).images

    plain, long, weighted = sample("a red cube"), sample(LONG), sample("a (red:1.6) cube")
    longer = sample(LONG.replace("green sphere", "black pyramid"))
    with monkeypatch.context() as m:
        m.setattr(ControlPipeline, "encode_prompt", old_encode_prompt)
        assert torch.equal(sample("a red cube"), plain)
        assert torch.equal(sample(LONG), sample(LONG.replace("green sphere", "black pyramid")))  # truncated before
    assert not torch.equal(long, longer) and not torch.allclose(weighted, plain)


# ------------------------------------------------------------------------------------- mini model


def test_mini_tokenizer_window_of_32(tmp_path):
    from transformers import CLIPTextModel

    from controlnet.mini.tokenizer import build_tokenizer
    from controlnet.tiny import clip_text_config, tiny_text_kwargs

    tok = build_tokenizer(tmp_path)
    torch.manual_seed(0)
    te = CLIPTextModel(clip_text_config(len(tok), 32, **tiny_text_kwargs(32))).eval()
    short = "a red cube"
    states, _ = encode_prompts([te], [tok], [short], [""], True)
    assert torch.equal(states[1:], encode_sd(te, tok, [short])) and states.shape[1] == 32
    long = " ".join(["a red cube and a blue sphere"] * 6)  # > 30 word tokens
    assert len(tok(long).input_ids) > 32
    states, _ = encode_prompts([te], [tok], [long], [""], True)
    assert states.shape[1] % 32 == 0 and states.shape[1] > 32  # 32-token chunks
    assert torch.equal(states[1:], CompelForSD(_Pipe(te, tok))(long, negative_prompt="").embeds)
    weighted, _ = encode_prompts([te], [tok], ["a (red:1.4) cube"], [""], True)
    assert not torch.allclose(weighted[1:], encode_sd(te, tok, [short]))


class _Pipe:
    def __init__(self, text_encoder, tokenizer):
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
