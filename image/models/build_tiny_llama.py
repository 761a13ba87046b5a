"""Build the tiny random Llama of docs/engine.md §3(a) into a directory, deterministically,
offline.

Run with the engine venv's Python (it needs torch, transformers and tokenizers):

    $APPLIANCE_ENGINE_VENV/bin/python image/models/build_tiny_llama.py OUTDIR

The model (590k parameters, 2.4 MB) has random weights: its text is junk, but vLLM serves every
endpoint with it and starts in ~20 s, so it is the fixture of the real-engine test tier. The same
interpreter and library versions give byte-identical files.

Steps (docs/engine.md §3(a)):
 1. corpus: Python's pydoc topics and the system's common licence texts, in a fixed order;
 2. byte-level BPE tokenizer, vocabulary 2048, three special tokens;
 3. a fast tokenizer with bos/eos/pad and a ChatML chat template;
 4. LlamaForCausalLM with seed 0 (hidden 128, 2 layers, 2 heads), safetensors, generation config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from staging import build_into  # image/models/staging.py, beside this script

LICENSES = Path("/usr/share/common-licenses")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ENDOFTEXT, _IM_START, IM_END = SPECIAL_TOKENS
VOCABULARY_SIZE = 2048
MAX_LENGTH = 512
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus() -> Iterator[str]:
    # 1. Text present on any Debian machine with Python, in a fixed order.
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    if LICENSES.is_dir():
        for path in sorted(LICENSES.iterdir()):
            if path.is_file() and not path.is_symlink():
                yield path.read_text(errors="replace")


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    # 2. Byte-level BPE, without a prefix space.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCABULARY_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)

    # 3. The tokenizer as transformers wants it, with a chat template.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=MAX_LENGTH,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    # 4. A fresh Llama with fixed random weights.
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    ).save_pretrained(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to create (must not exist)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} already exists")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    build_into(args.out, build)
    print(f"tiny llama written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
