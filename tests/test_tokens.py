"""Chat-format tokenisation: one BOS at most, and the content scope (no chat-template tokens)."""

from __future__ import annotations

import pytest

from igds.core.data import make_record
from igds.core.tokens import collate, tokenize_records
from tests.conftest import build_char_tokenizer

SYSTEM = "You are a helpful assistant."


def _tokenizer(bos_in_template: bool):
    tok = build_char_tokenizer()
    tok.add_special_tokens({"bos_token": "<bos>"})
    tok.add_bos_token = True  # the tokenizer asks for a BOS (Gemma's does)
    head = "{{ bos_token }}" if bos_in_template else ""
    tok.chat_template = (head + "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
                         "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


RECORD = make_record("What is 2+2?", "", "4\n\n#### 4", "t", "s")


@pytest.mark.parametrize("bos_in_template", [True, False])
def test_exactly_one_bos_whether_or_not_the_template_writes_it(bos_in_template):
    tok = _tokenizer(bos_in_template)
    ids = tokenize_records(tok, [RECORD], 512).input_ids[0]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1, tok.decode(ids[:3])


def test_content_scope_keeps_the_records_text_and_drops_the_template():
    tok = build_char_tokenizer()
    tok.chat_template = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n" + tok.chat_template)
    t = tokenize_records(tok, [RECORD], 512)
    ids = t.input_ids[0]
    kept = {scope: tok.decode([i for i, m in zip(ids, collate(t, [0], 0, scope).scope_mask[0]) if m])
            for scope in ("content", "response_content", "response", "all")}
    assert kept["content"] == RECORD.prompt + RECORD.output
    assert kept["response_content"] == RECORD.output  # no end-of-turn marker, no prompt
    assert kept["response"] != kept["response_content"] and "<|im_end|>" in kept["response"]
    assert SYSTEM not in kept["content"] and "assistant" not in kept["content"]
    assert kept["response"].startswith(RECORD.output) and SYSTEM in kept["all"]


def test_content_spans_are_clipped_by_truncation():
    tok = build_char_tokenizer()
    t = tokenize_records(tok, [RECORD], 20)  # cuts inside the prompt
    assert all(hi <= 20 for lo, hi in t.content[0])
    mask = collate(t, [0], 0, "content").scope_mask[0]
    assert mask.sum() > 0 and len(mask) == 20


@pytest.mark.parametrize("bos", [True, False])
def test_plain_text_has_no_template_token(bos):
    """The SAE's own text (data.splits.sae): the prompt, a newline and the response, with the
    tokenizer's BOS when it asks for one and nothing of the chat template."""
    from igds.core.tokens import tokenize_plain

    tok = _tokenizer(bos_in_template=False)
    tok.add_bos_token = bos
    t = tokenize_plain(tok, [RECORD], 512)
    ids = t.input_ids[0]
    text = tok.decode(ids[1:] if bos else ids)
    assert text == RECORD.prompt + "\n" + RECORD.output
    assert (ids[0] == tok.bos_token_id) == bos and ids.count(tok.bos_token_id) == int(bos)
    assert SYSTEM not in tok.decode(ids) and "<|im_start|>" not in tok.decode(ids)
    assert tok.decode(ids[t.response_start[0]:]) == RECORD.output
    assert collate(t, [0], 0, "content").scope_mask[0].sum() == len(ids) - 1  # position 0 never in scope
