"""dcclip_core: small bilingual (Chinese/English) image-text models on ONNX Runtime.

    import dcclip_core
    m = dcclip_core.load()                  # assets/models/default, lazy ONNX sessions, no torch
    m.encode_text(["一只猫", "a cat"])       # float32 (n, d), L2-normalised
    m.encode_image(["a.jpg", pil_image])    # float32 (n, d), L2-normalised
    m.info                                  # id, hash, dims, languages
    isinstance(m, dcclip_core.Encoder)      # True: the protocol index/ and test fakes share
"""
from .config import ModelConfig, ModelNotFoundError, architecture, list_architectures, list_models, model_dir
from .encoder import Encoder
from .preprocess import ImageLoadError, load_image, to_pixels
from .runtime import Model, load
from .tokenizer import Tokenizer

__all__ = ["load", "Model", "Encoder", "ModelConfig", "ModelNotFoundError", "list_models", "list_architectures",
           "architecture", "model_dir", "Tokenizer", "ImageLoadError", "load_image", "to_pixels"]
