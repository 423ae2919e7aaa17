"""Starting weights from elsewhere (cfg init): the published DeepCluster checkpoints and torchvision's
ImageNet VGG16-BN, mapped onto this repository's parameter names.

- DeepCluster (facebookresearch/deepcluster, `download_model.sh`): a dict with "epoch", "arch",
  "state_dict", "optimizer"; the state_dict was saved with the convolutions wrapped in
  DataParallel ("features.module.0.weight"), with Sobel ("sobel.0.weight") and a head
  ("top_layer.weight"). Its layer indices are ours: features.N, classifier.{0,3} (VGG16),
  classifier.{1,4} (AlexNet).
- torchvision `vgg16_bn(weights="IMAGENET1K_V1")`: a bare state_dict, RGB input (no Sobel),
  the same features.N, classifier.{0,3} and an ImageNet head classifier.6, which is dropped.

The convolutions must fit exactly; a classifier whose shape differs (another input_size) is left
at its fresh initialisation, with a log line. DeepCluster's head is never loaded: every run
clusters anew and makes its own.
"""
import torch

from errors import ConfigError

from .common import HEAD_PREFIXES

DROPPED = (*HEAD_PREFIXES, "classifier.6.")  # heads of other label sets


def read_state_dict(path):
    """The weights in a file: a checkpoint dict with "state_dict", or a bare state_dict."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"'init' = '{path}' does not exist") from None
    except Exception as e:
        raise ConfigError(f"'init' = '{path}' cannot be read as a PyTorch file ({type(e).__name__})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"'init' = '{path}' holds no state_dict of tensors (expected a DeepCluster checkpoint "
                          "or torchvision's VGG16-BN weights)")
    return state


def unwrapped_names(state):
    """Parameter names without the "module." of (Distributed)DataParallel: as a prefix (a wrapped model),
    or after "features." (DeepCluster wrapped only its convolutions)."""
    return {key.removeprefix("module.").replace(".module.", "."): value for key, value in state.items()}


def load_pretrained(model, state, log=print):
    """Copy `state` (any of the formats above) into model; returns the names of what was loaded."""
    state = {k: v for k, v in unwrapped_names(state).items() if not k.startswith(DROPPED)}
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    convs = [k for k in ours if k.startswith(("features.", "sobel.")) and not k.endswith("num_batches_tracked")]
    missing = [k for k in convs if k not in state]
    if missing:
        hint = " (the file has no Sobel layers: use --sobel false)" if missing[0].startswith("sobel.") else ""
        raise ConfigError(f"'init' does not fit {len(missing)} convolutional tensors of this model, the first "
                          f"'{missing[0]}'{hint}; expected a VGG16-BN or AlexNet-BN of the same arch")
    for key in convs:
        if state[key].shape != ours[key].shape:
            hint = " (with Sobel the first conv takes 2 channels, RGB 3: set --sobel to match the file)"
            raise ConfigError(f"'init' does not fit '{key}': {tuple(state[key].shape)} in the file, "
                              f"{tuple(ours[key].shape)} here" + (hint if key == "features.0.weight" else ""))
    classifier = [k for k in ours if k.startswith("classifier.")]
    fits = all(k in state and state[k].shape == ours[k].shape for k in classifier)
    if not fits:
        first = next(k for k in classifier if ours[k].dim() == 2)  # fc6: classifier.0 (VGG16), classifier.1 (AlexNet)
        shape = tuple(state[first].shape) if first in state else "none"
        log(f"init: the classifier of the file ({first} {shape}) does not fit this input_size "
            f"({tuple(ours[first].shape)}); the convolutions are loaded, the classifier starts fresh")
    loaded = [k for k in convs + (classifier if fits else []) + [k for k in ours if k.endswith("num_batches_tracked")]
              if k in state]
    with torch.no_grad():
        for key in loaded:
            ours[key].copy_(state[key])
    log(f"init: loaded {len(loaded)} tensors ({'convolutions and classifier' if fits else 'convolutions'})")
    return loaded
