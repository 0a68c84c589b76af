"""A backbone prompt that cannot carry RECAP's advantage indicator (tests of vla/advantage.py and of
the learner's refusal): a real word-level tokenizer whose vocabulary has only the task words, as a
model whose vocabulary lacks "positive"/"negative" would."""

import torch


class WordPrompt:
    """A backbone prompt built with a real word-level tokenizer that knows only the task words
    (as a model whose vocabulary has no "positive"/"negative" would)."""

    def __init__(self):
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "reach", "pick", "up", "the", "red", "block"])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
        self.processor = self

    def text_inputs(self, instruction: str) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(self.tokenizer(instruction)["input_ids"])}
