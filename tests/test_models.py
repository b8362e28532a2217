import pytest
import torch
from torch import nn

from ferstudy.errors import UserError
from ferstudy.models import adapt_first_conv, build_model, count_parameters, forward_flops
from ferstudy.spec import BACKBONES, plan_layers, validate_spec

torch.set_num_threads(1)


def forward(model, size=48, batch=2):
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, 1, size, size))


ALL_TYPES = [
    {"conv": {"filters": 8, "kernel": 3, "stride": 1, "padding": "same", "bias": False}},
    "batchnorm",
    "relu",
    {"conv": 8},
    {"leakyrelu": 0.1},
    {"maxpool": 2},
    {"conv": {"filters": 12, "kernel": 5, "padding": 0}},  # 24 -> 20
    {"batchnorm": {}},
    "elu",
    {"avgpool": {"size": 3, "stride": 2, "padding": 1}},  # 20 -> 10
    {"conv": {"filters": 16, "kernel": 3, "stride": 2}},  # same, stride 2: 10 -> 5
    "gelu",
    {"dropout": 0.25},
    "flatten",
    "batchnorm",  # BatchNorm1d now
    {"fc": 32},
    {"leakyrelu": {"slope": 0.2}},
    {"dropout": {"p": 0.5}},
    {"fc": {"units": 16}},
]


def test_every_layer_type_builds_and_runs():
    model = build_model({"layers": ALL_TYPES})
    assert isinstance(model, nn.Sequential)
    assert forward(model).shape == (2, 7)
    kinds = {type(m) for m in model}
    assert {
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.LeakyReLU,
        nn.ELU,
        nn.GELU,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.Dropout,
        nn.Flatten,
        nn.Linear,
    } <= kinds
    names = list(dict(model.named_children()))
    assert names[:3] == ["conv0", "batchnorm1", "relu2"] and names[-1] == "head"
    assert model.conv0.bias is None and model.conv3.bias is not None
    assert model.fc15.in_features == 16 * 5 * 5
    assert isinstance(model.batchnorm14, nn.BatchNorm1d) and isinstance(model.batchnorm1, nn.BatchNorm2d)
    assert model.leakyrelu16.negative_slope == 0.2
    assert model.head.out_features == 7 and model.head.in_features == 16
    # the plan's shapes agree with a real forward pass
    plan = plan_layers(ALL_TYPES)
    x = torch.randn(2, 1, 48, 48)
    for p, m in zip(plan, model):
        x = m(x)
        assert tuple(x.shape[1:]) == p.shape, p.name
    assert "conv0" in str(model) and "head" in str(model)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_gap_auto_flatten_and_options():
    m = build_model({"layers": [{"conv": 16}, "relu", "gap"]}, num_classes=5)
    assert forward(m).shape == (2, 5)
    assert not any(isinstance(x, nn.Flatten) for x in m)  # gap already flattens
    m = build_model({"layers": [{"conv": 4}, {"maxpool": 4}]})
    assert isinstance(m[-2], nn.Flatten) and m.head.in_features == 4 * 12 * 12
    m = build_model({"layers": [{"conv": 4}, {"fc": 10}]})  # flatten inserted before the first fc
    assert isinstance(m[1], nn.Flatten) and m[2].in_features == 4 * 48 * 48
    assert forward(m).shape == (2, 7)
    m = build_model({"layers": ["flatten", {"fc": 10}]})  # explicit pixel MLP
    assert m[1].in_features == 48 * 48
    m = build_model({"layers": [{"conv": {"filters": 4, "kernel": 4}}]}, input_size=44)  # even kernel, same
    assert m.head.in_features == 4 * 44 * 44
    assert forward(m, 44).shape == (2, 7)


def test_input_size_and_channels():
    spec = {"layers": [{"conv": 4}, {"maxpool": 2}]}
    m = build_model(spec, input_size=44, in_channels=3, num_classes=2)
    assert m.head.in_features == 4 * 22 * 22
    assert m(torch.randn(3, 3, 44, 44)).shape == (3, 2)


def test_twelve_conv_layers():
    layers = []
    for _stage, f in enumerate([32, 64, 128, 256]):
        for _ in range(3):
            layers += [{"conv": {"filters": f, "bias": False}}, "batchnorm", "relu"]
        layers.append({"maxpool": 2})
    layers += ["gap", {"dropout": 0.5}]
    m = build_model({"layers": layers})
    assert sum(isinstance(x, nn.Conv2d) for x in m) == 12
    assert forward(m, batch=1).shape == (1, 7)


def test_deterministic_init():
    spec = {"layers": [{"conv": 8}, "batchnorm", "relu", {"fc": 16}]}
    torch.manual_seed(3)
    a = build_model(spec)
    torch.manual_seed(3)
    b = build_model(spec)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    torch.manual_seed(4)
    c = build_model(spec)
    assert not torch.equal(a.conv0.weight, c.conv0.weight)
    assert float(a.fc3.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert torch.all(a.batchnorm1.weight == 1) and torch.all(a.fc3.bias == 0)


@pytest.mark.parametrize(
    "layers, where, what",
    [
        (
            [{"conv": 8}, "relu", {"maxpool": 2}, {"conv": {"filter": 32}}],
            "layer 3 ({'conv': {'filter': 32}})",
            "unknown option 'filter' (expected filters, kernel, stride, padding, bias)",
        ),
        ([{"conv": 8}, "relu", "softmax"], "layer 2 ('softmax')", "unknown layer type 'softmax'"),
        ([{"conv": 8}, {"conv": 8, "relu": None}], "layer 1", "exactly one key"),
        ([{"conv": 8}, 5], "layer 1 (5)", "type name or a one-key mapping"),
        ([{"conv": {"kernel": 3}}], "layer 0", "missing 'filters'"),
        ([{"conv": -4}], "layer 0", "filters must be an integer from 1 to 4096"),
        ([{"conv": 8.5}], "layer 0", "filters must be an integer"),
        ([{"conv": True}], "layer 0", "filters must be an integer"),
        ([{"conv": {"filters": 8, "padding": "full"}}], "layer 0", "padding must be 'same', 'valid' or an integer"),
        ([{"conv": {"filters": 8, "bias": "no"}}], "layer 0", "bias must be true or false"),
        ([{"conv": {"filters": 8, "kernel": 4, "stride": 2}}], "layer 0", "even kernel"),
        (
            [{"conv": 8}, "relu", {"maxpool": {"size": 2, "strid": 2}}],
            "layer 2",
            "unknown option 'strid' (expected size, stride, padding)",
        ),
        ([{"conv": 8}, {"maxpool": {"size": 2, "padding": 2}}], "layer 1", "padding must be at most"),
        ([{"conv": 8}, {"dropout": 1.5}], "layer 1", "p must be a number in [0, 1)"),
        ([{"conv": 8}, "dropout"], "layer 1", "give the drop probability"),
        ([{"conv": 8}, {"leakyrelu": -1}], "layer 1", "slope must be a number >= 0"),
        ([{"conv": 8}, {"relu": 3}], "layer 1", "takes no value"),
        ([{"conv": 8}, {"batchnorm": {"momentum": 0.1}}], "layer 1", "unknown option 'momentum' (expected no options)"),
        ([{"fc": 128}, {"conv": 8}], "layer 0 ({'fc': 128})", "fc before any conv layer"),
        ([{"conv": 8}, "gap", {"conv": 8}], "layer 2", "already flattened at layer 1"),
        ([{"conv": 8}, "flatten", {"maxpool": 2}], "layer 2", "already flattened at layer 1"),
        ([{"conv": 8}, "gap", "flatten"], "layer 2", "already flattened"),
        ([{"conv": 8}, {"fc": 0}], "layer 1", "units must be an integer from 1 to 65536"),
        # widths that would size memory: refused before anything is allocated
        ([{"conv": 8}, {"fc": 3_000_000_000}], "layer 1", "units must be an integer from 1 to 65536, got 3000000000"),
        ([{"conv": 8}, {"fc": 3e9}], "layer 1", "units must be an integer"),
        ([{"conv": 10**6}], "layer 0", "filters must be an integer from 1 to 4096"),
        (
            [{"conv": {"filters": 8, "padding": 10**9}}],
            "layer 0",
            "padding must be 'same', 'valid' or an integer from 0 to 48",
        ),
        ([{"conv": {"filters": 8, "kernel": 10**6}}], "layer 0", "kernel must be an integer from 1 to 48"),
        ([{"conv": 8}, {"maxpool": 10**9}], "layer 1", "size must be an integer from 1 to 48"),
        ([{"conv": 4096}, "flatten", {"fc": 65536}], "layer 2", "more than 200,000,000"),
        (
            [{"conv": 8}] + [{"maxpool": 2}] * 6,
            "after layer 6",
            "feature map is 0x0: too much pooling or striding for 48x48 input",
        ),
        ([{"conv": {"filters": 8, "kernel": 7, "padding": 0}}] * 8, "after layer 7", "feature map is 0x0"),
    ],
)
def test_invalid_layer_specs_name_the_layer(layers, where, what):
    for call in (lambda: validate_spec({"layers": layers}), lambda: build_model({"layers": layers})):
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(where), msg
        assert what in msg, msg
        assert "\n" not in msg


def test_invalid_top_level_specs():
    for spec, what in [
        ({"layers": []}, "non-empty list"),
        ({"layers": "conv"}, "non-empty list"),
        ({}, "exactly one of"),
        ({"layers": [{"conv": 8}], "backbone": "resnet18"}, "exactly one of"),
        ({"layers": [{"conv": 8}], "blocks": []}, "unknown architecture key 'blocks'"),
        ({"backbone": "resnet50"}, "unknown backbone 'resnet50' (expected resnet18, vgg11_bn)"),
        ({"backbone": "resnet18", "pretrained": 3}, "pretrained must be null or a path"),
        (["conv"], "must be a mapping"),
    ]:
        with pytest.raises(UserError, match=None) as e:
            validate_spec(spec)
        assert what in str(e.value), (spec, str(e.value))
    with pytest.raises(UserError, match="at least 32x32"):
        validate_spec({"backbone": "vgg11_bn"}, input_size=24)
    # the crop size matters: 5 pools are fine at 48 but not at 24
    validate_spec({"layers": [{"conv": 4}] + [{"maxpool": 2}] * 5})
    with pytest.raises(UserError, match="after layer 5 .* 0x0.* 24x24"):
        validate_spec({"layers": [{"conv": 4}] + [{"maxpool": 2}] * 5}, input_size=24)


def test_flops_and_params_by_hand():
    m = build_model({"layers": [{"conv": 8}]})  # conv 1->8 k3 same on 48x48, then head 8*48*48 -> 7
    assert count_parameters(m) == (8 * 9 + 8) + (8 * 48 * 48 * 7 + 7)
    assert forward_flops(m, 48) == 2 * 8 * 9 * 48 * 48 + 2 * 8 * 48 * 48 * 7

    spec = {
        "layers": [
            {"conv": {"filters": 16, "kernel": 5, "stride": 2, "bias": False}},  # 48 -> 24
            "batchnorm",
            "relu",
            {"maxpool": 2},  # 24 -> 12
            {"conv": {"filters": 32, "kernel": 3, "padding": 0}},  # 12 -> 10
            "gap",
            {"fc": 64},
        ]
    }
    m = build_model(spec)
    params = 16 * 25 + 2 * 16 + (16 * 9 * 32 + 32) + (32 * 64 + 64) + (64 * 7 + 7)
    assert count_parameters(m) == params
    flops = 2 * (16 * 24 * 24 * 25) + 2 * (32 * 10 * 10 * 16 * 9) + 2 * 32 * 64 + 2 * 64 * 7
    assert forward_flops(m, 48) == flops
    m.conv0.weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == params - 16 * 25
    assert m.training  # forward_flops restores the mode
    m.eval()
    forward_flops(m, 44)
    assert not m.training


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_forward(name):
    torch.manual_seed(0)
    m = build_model({"backbone": name, "pretrained": None})
    assert forward(m, 48).shape == (2, 7)
    assert forward(m, 44).shape == (2, 7)
    first = next(x for x in m.modules() if isinstance(x, nn.Conv2d))
    assert first.in_channels == 1 and first.stride == (1, 1) and first.kernel_size == (3, 3)
    assert not any(isinstance(x, nn.MaxPool2d) and x.stride == 2 and x.kernel_size == 3 for x in m.modules())
    assert forward_flops(m, 44) > 1e8
    assert 5e6 < count_parameters(m) < 2e7


def test_adapt_first_conv():
    w = torch.zeros(2, 3, 7, 7)
    w[0] = 1.0  # flat kernel: sum over RGB and 7x7 -> 3x3 keeps the total (147)
    w[1, 0, 3, 3] = 2.0  # a centred point stays centred
    a = adapt_first_conv(w, (2, 1, 3, 3))
    assert a.shape == (2, 1, 3, 3)
    assert torch.allclose(a[0], torch.full((1, 3, 3), 147 / 9))
    assert a[1, 0, 1, 1] > 0 and float(a[1].sum()) == pytest.approx(2.0)
    assert a[1, 0, 0, 0] == 0 and torch.allclose(a[1, 0], a[1, 0].flip(0).flip(1))
    same = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapt_first_conv(same, (4, 1, 3, 3)), same.sum(1, keepdim=True))


def test_pretrained_missing_path(tmp_path):
    path = tmp_path / "nope" / "resnet18.pth"
    for call in (validate_spec, build_model):
        with pytest.raises(UserError) as e:
            call({"backbone": "resnet18", "pretrained": str(path)})
        assert str(path) in str(e.value) and "never downloads" in str(e.value)


def test_pretrained_resnet18_from_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)  # ImageNet layout: 7x7 RGB stem, 1000-way fc
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    torch.manual_seed(2)
    m = build_model({"backbone": "resnet18", "pretrained": str(path)})
    assert torch.equal(m.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert torch.equal(m.bn1.running_var, ref.bn1.running_var)
    assert m.fc.weight.shape == (7, 512)  # classifier skipped, fresh
    assert torch.allclose(m.conv1.weight, adapt_first_conv(ref.conv1.weight, (64, 1, 3, 3)))
    # adapting: RGB summed, 7x7 resampled to 3x3 keeping each kernel's sum
    assert torch.allclose(m.conv1.weight.sum(dim=(1, 2, 3)), ref.conv1.weight.sum(dim=(1, 2, 3)), atol=1e-4)
    assert forward(m).shape == (2, 7)

    # a state dict of another architecture is refused with the path in the message
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "foo.weight": torch.zeros(3)}, bad)
    with pytest.raises(UserError, match="unexpected tensor 'foo.weight'") as e:
        build_model({"backbone": "resnet18", "pretrained": str(bad)})
    assert str(bad) in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        build_model({"backbone": "resnet18", "pretrained": str(junk)})


def test_pretrained_vgg11_bn_features(tmp_path):
    import torchvision

    # torchvision's vgg11_bn, built on the meta device (its 25088x4096 classifier would take
    # 0.5 GB); features get real random tensors, the classifier keys are left out (skipped anyway)
    with torch.device("meta"):
        ref = torchvision.models.vgg11_bn(weights=None)
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros((), dtype=v.dtype)
        for k, v in ref.state_dict().items()
        if not k.startswith("classifier.")
    }
    state["classifier.6.weight"] = torch.randn(1000, 4096, generator=g)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    m = build_model({"backbone": "vgg11_bn", "pretrained": str(path)})
    assert torch.equal(m.features[4].weight, state["features.4.weight"])
    assert torch.allclose(m.features[0].weight, state["features.0.weight"].sum(1, keepdim=True))
    assert torch.equal(m.features[0].bias, state["features.0.bias"])
    assert forward(m, 44).shape == (2, 7)
    del state["features.8.weight"]
    torch.save(state, path)
    with pytest.raises(UserError, match="lacks 1 tensors, e.g. 'features.8.weight'"):
        build_model({"backbone": "vgg11_bn", "pretrained": str(path)})


# ----------------------------------------------------------------------------- pretrained: imagenet
def _imagenet_file(name, torch_home):
    """A weights file where torchvision's weights API reads it ($TORCH_HOME/hub/checkpoints/<the
    file its url ends with>), from a randomly initialised torchvision model of the same layout.
    vgg11_bn's 25088x4096 and 4096x4096 classifier layers (0.5 GB, skipped by the loader anyway) are
    built on the meta device and left out; its last 4096x1000 layer is kept."""
    import torchvision

    from ferstudy.models import imagenet_cache_file

    url, path = imagenet_cache_file(name)
    assert path == torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    torch.manual_seed(3)
    if name == "resnet18":
        state = torchvision.models.resnet18(weights=None).state_dict()
    else:
        with torch.device("meta"):
            ref = torchvision.models.vgg11_bn(weights=None)
        g = torch.Generator().manual_seed(3)
        state = {
            k: torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.tensor(7)
            for k, v in ref.state_dict().items()
            if k not in ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")
        }
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state, path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache and no network: a download attempt fails as it does offline."""
    import urllib.error

    import torch.hub

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def test_imagenet_file_names_are_torchvisions():
    from ferstudy.models import imagenet_cache_file

    assert imagenet_cache_file("vgg11_bn")[0] == "https://download.pytorch.org/models/vgg11_bn-6002323d.pth"
    assert imagenet_cache_file("resnet18")[0] == "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@pytest.mark.parametrize("name", BACKBONES)
def test_pretrained_imagenet_from_the_torch_cache(name, torch_home):
    state, path = _imagenet_file(name, torch_home)
    torch.manual_seed(4)
    m = build_model({"backbone": name, "pretrained": "imagenet"}, input_size=44)
    own = m.state_dict()
    first, classifier = ("features.0", "classifier") if name == "vgg11_bn" else ("conv1", "fc")
    rgb = state[f"{first}.weight"]
    if name == "vgg11_bn":  # 3x3 kernels as ours: the grey kernel is exactly the sum over RGB
        assert torch.equal(own["features.0.weight"], rgb.double().sum(1, keepdim=True).float())  # summed in fp64
        assert torch.allclose(own["features.0.weight"], rgb.sum(1, keepdim=True), rtol=0, atol=1e-6)
    else:  # the 7x7 ImageNet stem: summed over RGB, then resampled to our 3x3 keeping each sum
        assert torch.allclose(own["conv1.weight"], adapt_first_conv(rgb, (64, 1, 3, 3)))
        assert torch.allclose(own["conv1.weight"].sum((1, 2, 3)), rgb.sum((1, 2, 3)), atol=1e-4)
    compared = 0
    for k, v in own.items():
        if k == f"{first}.weight" or k.startswith(classifier + "."):
            continue
        assert torch.equal(v, state[k]), k  # every other tensor as the file has it, BN statistics too
        compared += 1
    assert compared > 50
    assert own[f"{classifier}.weight"].shape == (7, 512)  # 7 classes, fresh
    assert forward(m, 44).shape == (2, 7)
    # the same spec with weights=False (a saved model's own state dict follows; cost counts) reads nothing
    path.unlink()
    build_model({"backbone": name, "pretrained": "imagenet"}, weights=False)


def test_pretrained_imagenet_missing_offline_is_one_line(torch_home):
    validate_spec({"backbone": "vgg11_bn", "pretrained": "imagenet"})  # config checks need no file
    with pytest.raises(UserError) as e:
        build_model({"backbone": "vgg11_bn", "pretrained": "imagenet"})
    msg = str(e.value)
    path = torch_home / "hub" / "checkpoints" / "vgg11_bn-6002323d.pth"
    assert "\n" not in msg
    assert "vgg11_bn-6002323d.pth" in msg and "https://download.pytorch.org/models/vgg11_bn-6002323d.pth" in msg
    assert f"put it at {path}" in msg and "could not be downloaded" in msg and "name resolution" in msg
    assert not path.exists()  # no partial file left behind

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a checkpoint")  # a broken file in the cache: named, with what to do
    with pytest.raises(UserError, match="could not be read .*delete it to fetch it again") as e:
        build_model({"backbone": "vgg11_bn", "pretrained": "imagenet"})
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_saved_pretrained_model_loads_without_the_cache(torch_home, tmp_path):
    from ferstudy.checkpoint import load_model, save_model

    _, path = _imagenet_file("resnet18", torch_home)
    spec = {"backbone": "resnet18", "pretrained": "imagenet"}
    m = build_model(spec, input_size=44)
    run_cfg = {"model": spec, "training": {"augment": {"crop": 44}}}
    save_model(tmp_path / "model.pt", m, run_cfg)
    path.unlink()  # another machine: no ImageNet weights there, and none needed
    loaded, _ = load_model(tmp_path / "model.pt")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in loaded.state_dict().items())
