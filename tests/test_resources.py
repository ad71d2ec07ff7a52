from raybench import resources, spec


def trial(model, *, pretrained=False, **options):
    return spec.Trial(model, "tiny", pretrained=pretrained, config=spec.TrainConfig(**options))


def test_no_gpu_known_means_no_gpu_asked():
    assert resources.trial_resources(trial("resnet_18"), gpu_memory_gb=None) == {"cpu": 1.0, "gpu": 0.0}
    assert resources.trial_resources(trial("resnet_18", device="cpu"), gpu_memory_gb=80)["gpu"] == 0.0


def test_small_models_share_a_gpu_and_the_largest_take_one():
    small = resources.trial_resources(trial("lenet5"), gpu_memory_gb=80)["gpu"]
    large = resources.trial_resources(trial("vit_l_16"), gpu_memory_gb=10)["gpu"]
    assert small <= 0.125 and large == 1.0


def test_bf16_and_smaller_images_need_less():
    fp32 = resources.estimate_gpu_memory_gb(trial("convnext_base"))
    assert resources.estimate_gpu_memory_gb(trial("convnext_base", precision="bf16")) < fp32
    assert resources.estimate_gpu_memory_gb(trial("convnext_base", image_size=128)) < fp32


def test_thesis_batch_sizes_fit_a_10_gb_card_and_doubling_the_memory_bound_ones_does_not():
    for model, batch in (("convnext_base", 8), ("resnet_50", 32), ("mlpmixer_l16", 8)):
        assert resources.estimate_gpu_memory_gb(trial(model)) < 10
        assert resources.estimate_gpu_memory_gb(trial(model, batch_size=2 * batch)) > 10


def test_fractions_are_powers_of_two():
    for need in (0.1, 1.0, 3.0, 9.0, 30.0, 79.0, 200.0):
        f = resources.gpu_fraction(need, 80)
        assert f in (1, 0.5, 0.25, 0.125, 0.0625)
        assert f == 1 or need * resources.SAFETY <= 80 * f


def test_without_gpu_sharing_every_gpu_trial_takes_a_whole_gpu():
    # packing without MPS ran at 0.91x the throughput of one trial at a time: it does not pay
    assert resources.trial_resources(trial("lenet5"), gpu_memory_gb=80, share_gpu=False)["gpu"] == 1.0
    assert resources.trial_resources(trial("lenet5", device="cpu"), gpu_memory_gb=80, share_gpu=False)["gpu"] == 0.0


def test_colour_images_and_whole_network_fine_tuning_need_more():
    grey = resources.estimate_gpu_memory_gb(trial("resnet_50"))
    assert resources.estimate_gpu_memory_gb(trial("resnet_50", input="colour")) > grey
    head = resources.estimate_gpu_memory_gb(trial("resnet_50", pretrained=True))
    assert resources.estimate_gpu_memory_gb(trial("resnet_50", pretrained=True, finetune="all")) > 2 * head
