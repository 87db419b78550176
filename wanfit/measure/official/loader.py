"""Load the official Wan code without running `wan/__init__.py`.

`import wan` imports every task of the package: speech-to-video and animate pull in decord, librosa,
opencv and peft, none of which a text/image-to-video run touches. The loader registers `wan` as a bare
package module (its `__path__` only) and imports just the modules the T2V / I2V / TI2V pipelines use.
Three obstacles are solved here, each where it bites:

* `wan.modules.t5` calls `torch.cuda.current_device()` in a default argument, at import: without CUDA
  that raises, and with CUDA it would create the CUDA context before the runner has read the device's
  idle memory. The runner always passes the device explicitly, so the import sees a stand-in returning 0.
* The pipelines import `torchvision.transforms.functional` at module level and `wan.utils.utils`
  imports torchvision and imageio; a CPU torch build cannot load a matching torchvision. Where one of
  them does not import, a minimal stand-in is registered (see `_torchvision_shim`, `_imageio_shim`).
* Which `wan` ran (directory, wan22 version, checkout commit) is returned as a `WanCode`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from wanfit.measure.patching import swapped
from wanfit.vocabulary.environment import WanCode
from wanfit.vocabulary.errors import WanfitError

INSTALL_HINT = ("pip install --no-deps wan22==2.2.11 easydict einops ftfy regex imageio tqdm "
                "(and the gpu extra: diffusers, transformers, accelerate)")
# The modules a T2V / I2V / TI2V run imports, in dependency order (nothing of s2v / animate).
# wan.distributed.*: the several-GPU path (FSDP, Ulysses), which the pipelines import too.
USED_MODULES = ("wan.configs", "wan.modules.attention", "wan.modules.model", "wan.modules.t5", "wan.modules.vae2_1",
                "wan.modules.vae2_2", "wan.utils.fm_solvers", "wan.utils.fm_solvers_unipc", "wan.utils.utils",
                "wan.distributed.util", "wan.distributed.fsdp", "wan.distributed.ulysses",
                "wan.distributed.sequence_parallel", "wan.text2video", "wan.image2video", "wan.textimage2video")


@dataclass
class LoadedWan:
    """The imported official modules (by their dotted name) and which code they came from."""

    modules: dict[str, types.ModuleType]
    code: WanCode
    shims: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> types.ModuleType:
        return self.modules[name]


_LOADED: dict[str, LoadedWan] = {}


def _package_dir(wan_repo: Path | None) -> Path:
    """The directory of the `wan` package to load: `wan_repo/wan`, or the installed one."""
    if wan_repo is not None:
        pkg = Path(wan_repo).resolve() / "wan"
        if not (pkg / "configs" / "__init__.py").is_file():
            raise WanfitError(f"{wan_repo} holds no official Wan package (no wan/configs/__init__.py): pass the "
                              "root of a Wan-Video/Wan2.2 checkout or fork")
        return pkg
    spec = importlib.util.find_spec("wan") if "wan" not in sys.modules else sys.modules["wan"].__spec__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / "configs" / "__init__.py").is_file():
        raise WanfitError(f"the official Wan code (module `wan`) is not importable: {INSTALL_HINT}, or pass the "
                          "directory of a Wan2.2 checkout")
    return Path(locations[0]).resolve()


def _installed_version(pkg: Path) -> str | None:
    """The wan22 distribution's version when `pkg` is the directory it installed (not a checkout)."""
    try:
        dist = importlib.metadata.distribution("wan22")
    except importlib.metadata.PackageNotFoundError:
        return None
    init = dist.locate_file("wan/__init__.py")
    return dist.version if Path(str(init)).resolve().parent == pkg else None


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on the machine: the commit stays unknown
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def which_wan(pkg: Path, shims: list[str]) -> WanCode:
    commit = _git(pkg.parent, "rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        # Changes to tracked files only: importing the package writes __pycache__ folders into the checkout.
        dirty = bool(_git(pkg.parent, "status", "--porcelain", "--untracked-files=no", "--", "wan"))
    return WanCode(path=str(pkg), version=_installed_version(pkg), commit=commit, dirty=dirty, shims=shims)


def _shim_module(name: str, package: bool = False) -> types.ModuleType:
    """A module with a spec (importlib.util.find_spec reads it), marked as wanfit's stand-in."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        module.__path__ = []  # a package: `import torchvision.transforms.functional` resolves to the children
    module.__wanfit_shim__ = True
    return module


def _torchvision_shim() -> types.ModuleType:
    """A stand-in for torchvision holding only what the used pipelines call: `transforms.functional.to_tensor`
    (WanI2V and WanTI2V.i2v turn the input image into a tensor with it). `wan.utils.utils` imports torchvision
    for `save_video` / `save_image`, which a measurement never calls: `utils.make_grid` / `save_image` raise."""
    import numpy as np
    import torch

    def to_tensor(pic) -> torch.Tensor:
        """torchvision's to_tensor for an 8-bit PIL image: [C, H, W] float32 in [0, 1]."""
        array = np.array(pic, dtype=np.uint8, copy=True)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)

    def unavailable(*_args, **_kwargs):
        raise NotImplementedError("torchvision is not installed (wanfit's stand-in has only to_tensor)")

    root = _shim_module("torchvision", package=True)
    transforms = _shim_module("torchvision.transforms", package=True)
    functional = _shim_module("torchvision.transforms.functional")
    functional.to_tensor = to_tensor
    utils = _shim_module("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable
    root.transforms, transforms.functional, root.utils = transforms, functional, utils
    return root


def _imageio_shim() -> types.ModuleType:
    """A stand-in for imageio: `wan.utils.utils` imports it for `save_video` only, which a measurement never calls."""
    mod = _shim_module("imageio")

    def get_writer(*_args, **_kwargs):
        raise NotImplementedError("imageio is not installed (wanfit's stand-in cannot write videos)")

    mod.get_writer = get_writer
    return mod


def _importable(name: str) -> bool:
    """Whether `name` imports; a failed import's half-registered modules are dropped."""
    try:
        importlib.import_module(name)
        return True
    except Exception:  # torchvision built for another torch fails with RuntimeError / OSError, not only ImportError
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return False


def _install_shims() -> list[str]:
    # diffusers and transformers record at import whether torchvision is installed and import it when it
    # is: they are imported first, so they see the truth and never reach for the stand-in.
    importlib.import_module("diffusers")
    importlib.import_module("transformers")
    shims = []
    if not _importable("torchvision.transforms.functional"):
        shim = _torchvision_shim()
        sys.modules.update({"torchvision": shim, "torchvision.transforms": shim.transforms,
                            "torchvision.transforms.functional": shim.transforms.functional,
                            "torchvision.utils": shim.utils})
        shims.append("torchvision: wanfit stand-in (to_tensor only)")
    elif getattr(sys.modules["torchvision"], "__wanfit_shim__", False):
        shims.append("torchvision: wanfit stand-in (to_tensor only)")
    if not _importable("imageio"):
        sys.modules["imageio"] = _imageio_shim()
        shims.append("imageio: wanfit stand-in (no video writing)")
    elif getattr(sys.modules["imageio"], "__wanfit_shim__", False):
        shims.append("imageio: wanfit stand-in (no video writing)")
    return shims


def _current_device_stub():
    """`torch.cuda.current_device` returns 0 without touching CUDA while wan.modules.t5 is imported (see above)."""
    import torch

    return swapped(torch.cuda, "current_device", lambda: 0)


def _forget_wan() -> None:
    """Drop a `wan` loaded from another directory: one process runs one official code at a time."""
    for key in [k for k in sys.modules if k == "wan" or k.startswith("wan.")]:
        del sys.modules[key]
    _LOADED.clear()


def _register_bare_package(pkg: Path) -> None:
    spec = importlib.machinery.ModuleSpec("wan", None, is_package=True)
    spec.submodule_search_locations = [str(pkg)]
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(pkg)]
    module.__file__ = str(pkg / "__init__.py")  # the file is never executed (see the module docstring)
    sys.modules["wan"] = module


def load_wan(wan_repo: Path | None = None) -> LoadedWan:
    """The official modules a T2V / I2V / TI2V run needs, from `wan_repo` (a directory from which `wan` is
    importable: a checkout or fork of Wan-Video/Wan2.2) or else from the installed PyPI `wan22`."""
    pkg = _package_dir(wan_repo)
    if str(pkg) in _LOADED:
        return _LOADED[str(pkg)]
    current = sys.modules.get("wan")
    if current is not None and list(getattr(current, "__path__", [])) != [str(pkg)]:
        _forget_wan()
    shims = _install_shims()
    if "wan" not in sys.modules:
        _register_bare_package(pkg)
    modules = {}
    try:
        with _current_device_stub():
            for name in USED_MODULES:
                modules[name] = importlib.import_module(name)
    except ImportError as e:
        raise WanfitError(f"the official Wan code at {pkg} could not import {e.name or e}: {INSTALL_HINT}") from e
    loaded = LoadedWan(modules=modules, code=which_wan(pkg, shims), shims=shims)
    _LOADED[str(pkg)] = loaded
    return loaded
