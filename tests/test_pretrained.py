"""Starting weights: the published DeepCluster checkpoints and torchvision's VGG16-BN, as fake state
dicts with their exact key names and shapes (nothing is downloaded)."""
import pytest
import torch
import torchvision

import train
from conftest import train_args
from models import build_model
from models.pretrained import load_pretrained, read_state_dict


def deepcluster_checkpoint(arch, input_size, k=10000):
    """What facebookresearch/deepcluster saved: Sobel, convolutions under DataParallel, a head of k clusters,
    no num_batches_tracked (older PyTorch), inside {"epoch", "arch", "state_dict", "optimizer"}."""
    model = build_model(arch, True, k, input_size)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("features.", "features.module.", 1) if key.startswith("features.") else key
        state[key] = torch.randn_like(value) if value.is_floating_point() else value
    return {"epoch": 500, "arch": arch, "state_dict": state, "optimizer": {}}


def torchvision_vgg16_bn():
    """torchvision's key names and shapes; the (huge) classifier tensors are zero-stride views."""
    with torch.device("meta"):
        names = torchvision.models.vgg16_bn().state_dict()
    state = {}
    for key, value in names.items():
        if key.startswith("classifier."):
            state[key] = torch.zeros(1).expand(value.shape)
        else:
            state[key] = torch.randn(value.shape) if value.is_floating_point() else torch.zeros((), dtype=value.dtype)
    return state


@pytest.mark.parametrize("arch, size", [("vgg16", 224), ("alexnet", 224), ("vgg16", 32)])
def test_deepcluster_checkpoints_load(arch, size):
    ckpt = deepcluster_checkpoint(arch, 224, k=50)
    model = build_model(arch, True, 0, size)
    messages = []
    loaded = load_pretrained(model, ckpt["state_dict"], messages.append)
    src = ckpt["state_dict"]
    assert torch.equal(model.features[0].weight, src["features.module.0.weight"])
    assert torch.equal(model.sobel[1].weight, src["sobel.1.weight"])
    assert not any(k.startswith("top_layer") for k in loaded) and model.top_layer is None
    first_linear = "classifier.0.weight" if arch == "vgg16" else "classifier.1.weight"
    if size == 224:
        assert torch.equal(model.state_dict()[first_linear], src[first_linear])
    else:  # another input_size: the convolutions load, the classifier starts fresh, and the log says so
        assert first_linear not in loaded and any("starts fresh" in m for m in messages)


def test_torchvision_vgg16_bn_loads_without_sobel_and_drops_its_imagenet_head():
    state = torchvision_vgg16_bn()
    model = build_model("vgg16", False, 0, 32)
    messages = []
    loaded = load_pretrained(model, state, messages.append)
    assert torch.equal(model.features[40].weight, state["features.40.weight"])
    assert not any(k.startswith("classifier.") for k in loaded)  # 25088 inputs at 224 px, 512 at 32 px
    assert any("starts fresh" in m for m in messages)
    with pytest.raises(SystemExit, match="sobel"):  # RGB weights into the Sobel model: one line
        load_pretrained(build_model("vgg16", True, 0, 32), state, messages.append)


def test_weights_of_another_arch_are_one_line():
    state = deepcluster_checkpoint("alexnet", 224, k=5)["state_dict"]
    with pytest.raises(SystemExit) as e:
        load_pretrained(build_model("vgg16", True, 0, 32), state)
    assert str(e.value.code).startswith("config error: 'init' does not fit") and "\n" not in str(e.value.code)


def test_train_starts_from_init_and_num_epoch_0_gives_its_clustering(blob_tree, tmp_path):
    path = tmp_path / "deepcluster_vgg16.pth.tar"
    torch.save(deepcluster_checkpoint("vgg16", 32, k=20), path)
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "0", "--init", str(path)))
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    source = read_state_dict(str(path))
    assert torch.equal(ckpt["state_dict"]["features.3.weight"], source["features.module.3.weight"])
    assert torch.equal(ckpt["state_dict"]["classifier.3.weight"], source["classifier.3.weight"])
    assert "init: loaded" in (exp / "train.log").read_text()
    with pytest.raises(SystemExit, match="'init'"):
        train.main("cpu", train_args(blob_tree, tmp_path / "e2", "--init", str(tmp_path / "missing.pth")))


def torchvision_alexnet():
    """torchvision's AlexNet (no batch norm, 64-192-384-256-256 filters): a layout that does not fit ours."""
    with torch.device("meta"):
        names = torchvision.models.alexnet().state_dict()
    return {key: torch.zeros(1).expand(value.shape) for key, value in names.items()}


FILES = {"deepcluster_vgg16": lambda: deepcluster_checkpoint("vgg16", 224, k=10000)["state_dict"],
         "deepcluster_alexnet": lambda: deepcluster_checkpoint("alexnet", 224, k=10000)["state_dict"],
         "torchvision_vgg16_bn": torchvision_vgg16_bn, "torchvision_alexnet": torchvision_alexnet}
# (arch, sobel) that each file fits; every other combination must be a one-line error
FITS = {"deepcluster_vgg16": ("vgg16", True), "deepcluster_alexnet": ("alexnet", True),
        "torchvision_vgg16_bn": ("vgg16", False), "torchvision_alexnet": None}


@pytest.fixture(scope="module")
def published_files():
    return {name: make() for name, make in FILES.items()}


@pytest.mark.parametrize("sobel", [True, False])
@pytest.mark.parametrize("arch, size", [("vgg16", 32), ("vgg16", 64), ("vgg16", 224), ("alexnet", 64),
                                        ("alexnet", 96), ("alexnet", 224)])
@pytest.mark.parametrize("name", list(FILES))
def test_every_arch_size_and_sobel_loads_or_is_one_line(published_files, name, arch, size, sobel):
    """Both published formats and torchvision's, into every model the settings allow: the convolutions load
    (and the classifier when it fits, i.e. at 224 px), or the run stops with one line naming 'init'."""
    state = published_files[name]
    model = build_model(arch, sobel, 0, size)
    messages = []
    if FITS[name] != (arch, sobel):
        with pytest.raises(SystemExit) as e:
            load_pretrained(model, state, messages.append)
        assert str(e.value.code).startswith("config error: 'init' does not fit") and "\n" not in str(e.value.code)
        return
    loaded = load_pretrained(model, state, messages.append)
    source = {k.replace("features.module.", "features."): v for k, v in state.items()}
    for key in [k for k in model.state_dict() if k.startswith("features.") and k.endswith("weight")]:
        assert torch.equal(model.state_dict()[key], source[key]), key
    fc6 = "classifier.0.weight" if arch == "vgg16" else "classifier.1.weight"
    assert (fc6 in loaded) == (size == 224)
    assert (size == 224) != any("starts fresh" in m and fc6 in m for m in messages)
