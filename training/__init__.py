"""Training: SFT on TRL (+ PEFT LoRA for pretrained models), recipes, the tiny CPU student."""

from .recipes import RecipeError, SFTRecipe, bundled_recipe_path, load_recipe
from .sft import SFTResult, train_sft
from .tiny import TinyModelSpec, build_tiny_model
from .tokenizer import train_tokenizer

__all__ = [
    "RecipeError",
    "SFTRecipe",
    "SFTResult",
    "TinyModelSpec",
    "build_tiny_model",
    "bundled_recipe_path",
    "load_recipe",
    "train_sft",
    "train_tokenizer",
]
