"""Random-weight model dirs of the common image-text-to-text families, built from configs (no
download), for tests (`size="tiny"`) and the GPU bench (`size="full"`: a real model's shapes).

Each builder writes what a user's model dir holds -- `save_pretrained` of the model and of its
processor (image processor, tokenizer, chat template) -- so the dir loads through the Auto classes
like a downloaded checkpoint. The tokenizer is a small byte-level BPE trained on the task
vocabulary (as for the tiny default) plus the family's special tokens; a full-size model keeps its
real vocabulary size in the config (the extra embedding rows are simply never looked up).

Image processors are the PIL ("slow") ones and no video processor is saved, so nothing here
needs torchvision (vla.backbone.load_processor loads such a dir without it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vla.backbone import image_only_processor_class, quiet_transformers

FAMILIES = ("paligemma", "paligemma2", "idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl", "llava", "gemma3")
SIZES = ("tiny", "full")


@dataclass(frozen=True)
class Dims:
    """Model shapes of one size: tiny (tests) or a real checkpoint's."""
    hidden: int = 32
    intermediate: int = 64
    layers: int = 1
    heads: int = 2
    kv_heads: int = 1
    head_dim: int = 16
    vision_hidden: int = 32
    vision_intermediate: int = 64
    vision_layers: int = 1
    vision_heads: int = 2
    image: int = 32  # vision tower input size (px)
    patch: int = 8
    vocab: int | None = None  # None = the tokenizer's size
    tie_embeddings: bool = False  # input embedding shared with the LM head (Qwen2.5-VL-3B)
    vision_window: int | None = None  # Qwen2.5-VL windowed attention (px); None = 2x2 merged patches
    vision_full_attention: tuple[int, ...] | None = None  # Qwen2.5-VL blocks with full attention; None = last


TINY = Dims()

# ---- tokenizers and chat templates ------------------------------------------------------------

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def train_tokenizer(special: list[str], bos: str = "<bos>", eos: str = "<eos>", pad: str = "<pad>",
                    extra_special: dict[str, str] | None = None):
    """A small byte-level BPE (any text still tokenizes) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vla.tiny import task_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    names = list(dict.fromkeys([pad, eos, bos, "<unk>", *special]))
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=names, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(task_corpus() * 4, trainer)
    kwargs = {"extra_special_tokens": extra_special} if extra_special else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token="<unk>", padding_side="right", **kwargs)


def _token_ids(tokenizer, **tokens: str) -> dict[str, int]:
    return {k: tokenizer.convert_tokens_to_ids(v) for k, v in tokens.items()}


def _vocab(tokenizer, dims: Dims) -> int:
    return max(len(tokenizer), dims.vocab or 0)


# ---- families -----------------------------------------------------------------------------------

def _text_sizes(tokenizer, dims: Dims) -> dict:
    """A Gemma / Llama decoder's config arguments: its shapes from ``dims``, its special tokens."""
    return dict(vocab_size=_vocab(tokenizer, dims), hidden_size=dims.hidden, intermediate_size=dims.intermediate,
                num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads,
                head_dim=dims.head_dim, max_position_embeddings=8192, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def _vision_sizes(dims: Dims) -> dict:
    """A ViT's (SigLIP, CLIP, Idefics3) config arguments: its shapes from ``dims``."""
    return dict(hidden_size=dims.vision_hidden, intermediate_size=dims.vision_intermediate,
                num_hidden_layers=dims.vision_layers, num_attention_heads=dims.vision_heads,
                image_size=dims.image, patch_size=dims.patch)


def _paligemma(dims: Dims, gemma2: bool):
    from transformers import (
        Gemma2Config,
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": dims.image, "width": dims.image}, resample=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor.image_seq_length = (dims.image // dims.patch) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=train_tokenizer(["<image>"]))
    tok = processor.tokenizer
    text_cls = Gemma2Config if gemma2 else GemmaConfig
    text = text_cls(**_text_sizes(tok, dims))
    vision = SiglipVisionConfig(**_vision_sizes(dims))
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id,
                             projection_dim=dims.hidden)
    return PaliGemmaForConditionalGeneration(config), processor


def _idefics3(dims: Dims, smolvlm: bool):
    from transformers import LlamaConfig

    scale = 2
    seq_len = (dims.image // dims.patch) ** 2 // scale**2
    rows_cols = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = train_tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                           "<|im_start|>", *rows_cols])
    # The library defaults of a real checkpoint: split into max_image_size crops + a global view.
    image_kwargs = dict(do_image_splitting=True, size={"longest_edge": 4 * dims.image},
                        max_image_size={"longest_edge": dims.image}, resample=2)
    if smolvlm:
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

        processor = image_only_processor_class(SmolVLMProcessor)(
            image_processor=SmolVLMImageProcessorPil(**image_kwargs), tokenizer=tok, video_processor=None, image_seq_len=seq_len, chat_template=IDEFICS3_TEMPLATE)
        config_cls, model_cls = SmolVLMConfig, SmolVLMForConditionalGeneration
    else:
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**image_kwargs), tokenizer=tok,
                                      image_seq_len=seq_len, chat_template=IDEFICS3_TEMPLATE)
        config_cls, model_cls = Idefics3Config, Idefics3ForConditionalGeneration
    tok = processor.tokenizer
    text = LlamaConfig(**_text_sizes(tok, dims))
    vision = _vision_sizes(dims)
    config = config_cls(vision_config=vision, text_config=text.to_dict(), scale_factor=scale,
                        image_token_id=processor.image_token_id, pad_token_id=tok.pad_token_id)
    return model_cls(config), processor


def _qwen_vl(dims: Dims, v2_5: bool):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = train_tokenizer(["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>"], bos="<|endoftext|>", eos="<|im_end|>",
                          pad="<|endoftext|>")
    merge = 2
    pixels = dims.image * dims.image
    image_processor = Qwen2VLImageProcessorPil(patch_size=dims.patch, merge_size=merge, temporal_patch_size=2,
                                               min_pixels=pixels, max_pixels=pixels, resample=2,
                                               size={"shortest_edge": pixels, "longest_edge": pixels})
    ids = _token_ids(tok, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
                     vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>")
    text = dict(vocab_size=_vocab(tok, dims), hidden_size=dims.hidden, intermediate_size=dims.intermediate,
                num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads,
                max_position_embeddings=8192, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": _mrope_section(dims.hidden // dims.heads)})
    if v2_5:
        from transformers import (
            Qwen2_5_VLConfig as Config,
        )
        from transformers import (
            Qwen2_5_VLForConditionalGeneration as Model,
        )
        from transformers import (
            Qwen2_5_VLProcessor as Processor,
        )

        vision = dict(depth=dims.vision_layers, hidden_size=dims.vision_hidden,
                      intermediate_size=dims.vision_intermediate, num_heads=dims.vision_heads,
                      patch_size=dims.patch, spatial_merge_size=merge, temporal_patch_size=2,
                      out_hidden_size=dims.hidden, window_size=dims.vision_window or dims.patch * merge * 2,
                      fullatt_block_indexes=list(dims.vision_full_attention or [dims.vision_layers - 1]))
    else:
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision = dict(depth=dims.vision_layers, embed_dim=dims.vision_hidden, hidden_size=dims.hidden,
                      mlp_ratio=dims.vision_intermediate // dims.vision_hidden, num_heads=dims.vision_heads,
                      patch_size=dims.patch, spatial_merge_size=merge, temporal_patch_size=2)
    processor = image_only_processor_class(Processor)(image_processor=image_processor, tokenizer=tok,
                                                      video_processor=None, chat_template=QWEN_TEMPLATE)
    config = Config(text_config=text, vision_config=vision, tie_word_embeddings=dims.tie_embeddings, **ids)
    return Model(config), processor


def _mrope_section(head_dim: int) -> list[int]:
    """Rotary halves split over (time, height, width) as Qwen does (16, 24, 24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _llava(dims: Dims):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = train_tokenizer(["<image>"], bos="<s>", eos="</s>")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": dims.image}, resample=2,
                                            crop_size={"height": dims.image, "width": dims.image})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=dims.patch,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    text = LlamaConfig(**_text_sizes(tok, dims))
    # one layer more: LLaVA takes the features of the second-to-last layer (vision_feature_layer=-2)
    vision = CLIPVisionConfig(**{**_vision_sizes(dims), "num_hidden_layers": dims.vision_layers + 1},
                              projection_dim=dims.hidden)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config), processor


def _gemma3(dims: Dims):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    specials = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = train_tokenizer(["<start_of_turn>", "<end_of_turn>", *specials.values()], extra_special=specials)
    tokens_per_image = (dims.image // dims.patch // 2) ** 2  # the projector average-pools 2x2 patches
    image_processor = Gemma3ImageProcessorPil(size={"height": dims.image, "width": dims.image}, resample=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=GEMMA3_TEMPLATE,
                                image_seq_length=tokens_per_image)
    text = Gemma3TextConfig(**_text_sizes(tok, dims), query_pre_attn_scalar=dims.head_dim, sliding_window=512)
    vision = SiglipVisionConfig(**_vision_sizes(dims), vision_use_head=False)
    ids = _token_ids(tok, boi_token_index=specials["boi_token"], eoi_token_index=specials["eoi_token"],
                     image_token_index=specials["image_token"])
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tokens_per_image, **ids)
    return Gemma3ForConditionalGeneration(config), processor


def init_gemma3_projector(model, seed: int) -> None:
    """Gemma3's multimodal projector starts at zero, so a random-weight Gemma3 ignores its images
    entirely; give it small random weights like every other layer (trained checkpoints need nothing)."""
    weight = model.model.multi_modal_projector.mm_input_projection_weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=g) * weight.shape[0] ** -0.5)


BUILDERS: dict[str, Callable[[Dims], tuple]] = {
    "paligemma": lambda d: _paligemma(d, gemma2=False),
    "paligemma2": lambda d: _paligemma(d, gemma2=True),
    "idefics3": lambda d: _idefics3(d, smolvlm=False),
    "smolvlm": lambda d: _idefics3(d, smolvlm=True),
    "qwen2_vl": lambda d: _qwen_vl(d, v2_5=False),
    "qwen2_5_vl": lambda d: _qwen_vl(d, v2_5=True),
    "llava": _llava,
    "gemma3": _gemma3,
}

# Real checkpoints' shapes (from their published config.json), for the GPU bench.
FULL: dict[str, Dims] = {
    # PaliGemma 3B (pt-224): SigLIP So400m/14 at 224 px + Gemma 2B.
    "paligemma": Dims(hidden=2048, intermediate=16384, layers=18, heads=8, kv_heads=1, head_dim=256,
                      vision_hidden=1152, vision_intermediate=4304, vision_layers=27, vision_heads=16,
                      image=224, patch=14, vocab=257216),
    # Qwen2.5-VL-3B-Instruct: a 32-block ViT (patch 14, 2x2 merge) + a 36-layer 2048-wide decoder.
    "qwen2_5_vl": Dims(hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2, head_dim=128,
                       vision_hidden=1280, vision_intermediate=3420, vision_layers=32, vision_heads=16,
                       image=224, patch=14, vocab=151936, tie_embeddings=True, vision_window=112,
                       vision_full_attention=(7, 15, 23, 31)),
}


def build_random_vlm(family: str, size: str = "tiny", seed: int = 0):
    """(model, processor) of `family` with seeded random weights."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    if size == "full" and family not in FULL:
        raise ValueError(f"no full-size shapes for {family!r}; known: {', '.join(FULL)}")
    dims = FULL[family] if size == "full" else TINY
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = BUILDERS[family](dims)
        if family == "gemma3":
            init_gemma3_projector(model, seed)
    return model.eval(), processor


def save_random_vlm(family: str, out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Build `family` and `save_pretrained` model + processor into `out_dir` (a user's model dir)."""
    model, processor = build_random_vlm(family, size, seed)
    out = Path(out_dir)
    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out
