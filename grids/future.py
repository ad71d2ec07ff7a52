"""The thesis's future work (chapter 7) as one study, where its questions are: the small tiers.

The thesis's MobileNets collapse on its tiny tier (400 images) but not on small (4,200), and every from-scratch model
loses most between the two; it names the remedies it did not try. This grid adds four tiers between tiny and small
(600, 1,000, 1,500 and 2,500 images: nested like the thesis's, split by its per-class rule) and, at the thesis's
setting otherwise (352x352, SGD at 0.1, its schedule and early stopping):

- baseline (unlabelled): the thesis's small models, ConvNeXt-T and ViT-B/16 from scratch on small .. tiny;
- the future work's architectures (ConvMixer, Xception) on the same tiers;
- each training option as a labelled sweep (the report's "Effects" compares it with the baseline of the same model
  and tier) on ResNet-18, which the thesis found robust, and the two MobileNets, which it found not: optimizers
  (momentum, Nesterov, AdamW, each at the learning rate that suits it), smaller batches with and without learning-rate
  scaling, the plateau schedule, relative early stopping, testing the lowest validation loss, augmentation, grey
  1-channel and colour input, the mask of the cell at the centre (§7.2: as a 4th channel beside the grey or the
  colour image, or multiplied into the grey image), normalisation measured on the training split;
- ImageNet fine-tunes (head only, as §4.6) of the thesis's pretrainable small models and ViT-B/16 and B/32 (their
  224-pixel weights interpolated to 352, §7.2), and the same with the whole network trained;
- ResNet-18 and MobileNetV3-Small on the large tier, keeping their weights: grids/future_pbc.py fine-tunes from
  them (pretraining on the PBC data itself, §7.2), once this run has finished.

Three seeds each (the report gives means with 95% intervals): 744 trials, most of them on small tiers. Point
--data at the full PBC dataset (python -m raybench.data download DEST); `--dry-run` prints the plan.
"""

SMALL_TIERS = ["small", "n2500", "n1500", "n1000", "n600", "tiny"]
QUESTION_TIERS = ["n1500", "n600", "tiny"]  # where MobileNet breaks down: the option sweeps' tiers
QUESTION_MODELS = ["resnet_18", "mobilenet_small", "mobilenet_large"]

# label -> options, each against the baseline (the thesis's setting); the learning rates follow each optimizer's use
OPTIONS = {
    "momentum": {"optimizer": "momentum", "lr": 0.01},
    "nesterov": {"optimizer": "nesterov", "lr": 0.01},
    "adamw": {"optimizer": "adamw", "lr": 0.001},
    "batch16": {"batch_size": 16},  # a quarter of the thesis's 64: the plain smaller batch ...
    "batch16_sqrt": {"batch_size": 16, "lr_scaling": "sqrt"},  # ... with the learning rate scaled by sqrt(1/4)
    "batch16_linear": {"batch_size": 16, "lr_scaling": "linear"},  # ... and by 1/4
    "plateau": {"plateau_factor": 0.5, "plateau_patience": 5},
    "es_relative": {"es_mode": "relative", "es_min_delta": 0.01},
    "lowest_val_loss": {"tested": "lowest_val_loss"},
    "augment": {"augment": "flip+rot90+shift"},  # cells have no up or left: flips and quarter turns keep the class
    "augment_all": {"augment": "flip+rot90+jitter+shift+noise"},
    "grey1": {"input": "grey1"},
    "colour": {"input": "colour"},
    "mask": {"input": "grey3_mask"},  # the central cell's mask as a 4th channel (data.masks)
    "masked": {"input": "grey3_masked"},  # the grey image times the mask: the background black
    "colour_mask": {"input": "colour_mask"},  # RGB and the mask
    "measured": {"normalise": "measured"},
}

GRID = {
    "name": "future",
    "data": None,
    "tiers": {
        "large": None,
        "medium": 8500,
        "small": 4200,
        "n2500": 2500,
        "n1500": 1500,
        "n1000": 1000,
        "n600": 600,
        "tiny": 400,
    },
    "seeds": [0, 1, 2],
    "options": {"split_rule": "thesis", "dedupe": False},
    "sweeps": [
        {
            "models": ["lenet5", "resnet_18", "mobilenet_small", "mobilenet_large", "convnext_tiny", "vit_b_16"],
            "tiers": SMALL_TIERS,
        },
        {"models": ["convmixer_768_32", "convmixer_256_8", "xception"], "tiers": SMALL_TIERS},
        *(
            {"models": QUESTION_MODELS, "tiers": QUESTION_TIERS, "label": label, "options": options}
            for label, options in OPTIONS.items()
        ),
        # an explicit list, as the thesis's grid has one: ImageNet fine-tunes of the small models and two ViTs
        {
            "models": [*QUESTION_MODELS, "convnext_tiny", "vit_b_16", "vit_b_32"],
            "tiers": QUESTION_TIERS,
            "pretrained": True,
        },
        {
            "models": [*QUESTION_MODELS, "convnext_tiny", "vit_b_16", "vit_b_32"],
            "tiers": QUESTION_TIERS,
            "pretrained": True,
            "label": "finetune_all",
            "options": {"finetune": "all", "lr": 0.01},
        },
        {"models": ["vit_b_32"], "tiers": QUESTION_TIERS},  # its from-scratch baseline for the fine-tunes
        {"models": ["resnet_18", "mobilenet_small"], "tiers": ["large"], "save_weights": True},
    ],
}
