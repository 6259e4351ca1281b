"""Few-shot prompt learning on the frozen dual encoder (MVLPT, arXiv 2211.11720, on CoOp / VPT / UPT).

    data      ImageFolder tasks (``train/<class>/*``, ``test/<class>/*``, ``classnames.json``) or ELEVATER
              datasets (zipped or extracted, iris or coco index), few-shot splits
    tasks     ``python -m training.prompts.tasks build OUT``: the offline task collection from real data
    features  frozen image features cached per model hash + file; zero-shot class embeddings (ONNX)
    text      CoOp: learnable context vectors around the class-name tokens of the frozen TextStudent
    visual    VPT for the CNN tower: a pixel-space frame prompt, or feature-map prompt tokens
    vit       VPT for ViT towers (dcclip SmallViT, transformers CLIPVisionModel): deep (tokens per layer) or
              shallow (first layer); the prompted tower exported to ONNX with the tokens as an input
    methods   zeroshot, tip-adapter(-f), linear-probe, coop, vpt, upt, mvlpt (source / target / groups)
    source    ``python -m training.prompts.source``: the MVLPT source prompt (union of tasks, seeds averaged)
    protocol  ``python -m training.prompts.protocol``: 1/5/16 shots x 3 seeds on the held-out task, table + plot
    library   ``python -m training.prompts.library list|show|import|export|delete``
    api       learn a prompt from ``{label: [images]}`` with a progress callback; classify with labels or a prompt

Learned prompts are saved with ``dcclip_core.prompts`` (safetensors + JSON metadata) and applied at inference
without torch: text prompts as precomputed class embeddings, pixel prompts in numpy preprocessing.
``text``, ``visual`` and ``vit`` import torch; every other module imports it only inside the functions that train,
so ``--help``, listing prompts and classifying stay torch-free.
"""
