"""deepinv physics as saved operators: a ``deepinv.physics.LinearPhysics`` written as data (a JSON
config beside its own ``state_dict``) and rebuilt bit-exact, with no pickle and no import named by a file.

``physics_config(physics)`` gives::

    {"type": "deepinv", "class": "Inpainting",       # an attribute of deepinv.physics, a LinearPhysics
     "args": {"img_size": [1, 8, 8], ...},           # the JSON constructor arguments
     "tensor_args": {"mask": "mask"},                # tensor arguments: argument -> key in its state_dict
     "noise": {"class": "GaussianNoise", "args": {"sigma": 0.1}, "tensor_args": {}, "rng": false}}

A ``{"dtype": "float32"}`` value stands for a torch dtype; 0-d tensors (a noise sigma) are written as
numbers, larger ones only by their state key. ``"rng": true``: the noise model had its own generator;
the rebuilt one starts from its saved initial state. A mask generator (Inpainting from a ratio) is
rebuilt with its saved initial state too. deepinv is imported inside functions only.

>>> import torch, deepinv
>>> mask = torch.ones(1, 8, 8)
>>> physics = deepinv.physics.Inpainting((1, 8, 8), mask=mask, noise_model=deepinv.physics.GaussianNoise(0.1))
>>> config = physics_config(physics)
>>> config["class"], config["tensor_args"], config["noise"]["args"]
('Inpainting', {'mask': 'mask'}, {'sigma': 0.1})
>>> twin = physics_from_config(config, physics.state_dict())
>>> x = torch.rand(1, 1, 8, 8)
>>> torch.equal(twin.A(x), physics.A(x)), twin.noise_model.sigma.item() == physics.noise_model.sigma.item()
(True, True)
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch

from ..errors import IncompatibleBundleError, InvalidArgumentError

__all__ = ["is_deepinv_physics", "physics_config", "physics_from_config", "NOISE_MODELS"]

NOISE_MODELS = ("GaussianNoise", "PoissonNoise", "ZeroNoise", "PoissonGaussianNoise", "UniformNoise",
                "UniformGaussianNoise", "LogPoissonNoise", "GammaNoise", "SaltPepperNoise")
_SKIPPED = {"self", "device", "rng", "noise_model"}  # rebuilt on the CPU; rng and noise model apart
_SOLVER_ARGS = ("max_iter", "tol", "solver", "implicit_backward_solver")  # LinearPhysics' own keyword arguments
_ALIASES = {"Downsampling": {"img_size": "imsize"}}  # constructor argument -> the attribute holding it
_RUNTIME = {"Downsampling": {"imsize_dynamic"}}  # caches each A / A_adjoint call rewrites: not compared


def _derived(physics: Any, name: str) -> dict[str, Any]:
    """Arguments a class does not keep under their own name, read from what it does keep."""
    if name == "CompressedSensing":
        return {"m": int(physics._A.shape[0])}
    if name == "Inpainting":  # a mask drawn from a ratio keeps its generator (and its state): rebuilt so
        gen = physics._modules.get("gen")
        if gen is None:
            return {"pixelwise": True}  # used only to draw a mask
        return {"mask": float(gen.split_ratio), "pixelwise": bool(gen.pixelwise)}
    return {}


def is_deepinv_physics(operator: Any) -> bool:
    """Whether ``operator`` comes from ``deepinv.physics`` (no deepinv import needed).

    >>> is_deepinv_physics(object())
    False
    """
    return type(operator).__module__.startswith("deepinv.physics")


def _resolve(name: Any, base: str, allowed: tuple[str, ...] | None = None) -> type:
    """The class ``deepinv.physics.<name>``, a subclass of ``deepinv.physics.<base>``; nothing else."""
    what = "LinearPhysics classes" if base == "LinearPhysics" else f"noise models {list(allowed or ())}"
    refusal = InvalidArgumentError(f"deepinv class {name!r} is not allowed: only deepinv.physics {what} can be rebuilt")
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise refusal  # a dotted path or anything else never reaches an import
    if allowed is not None and name not in allowed:
        raise refusal
    try:
        import deepinv.physics as module
    except ImportError:
        raise IncompatibleBundleError(f"this bundle's operator is deepinv.physics.{name}: pip install deepinv") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, getattr(module, base))):
        raise refusal
    return cls


def _encode(value: Any, state: Mapping[str, torch.Tensor], why: str) -> tuple[str, Any]:
    """("json", value) or ("tensor", state key); InvalidArgumentError starting with ``why`` if neither."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:  # float32 0.1 is written 0.1 (the shortest text that reads back to it)
            half = value.dtype in (torch.float16, torch.float32)
            return "json", float(str(value.detach().cpu().numpy())) if half else value.item()
        key = next((k for k, v in state.items() if v is value), None)
        if key is not None:
            return "tensor", key
        raise InvalidArgumentError(f"{why} is a tensor that is not in its state_dict")
    if isinstance(value, torch.dtype):
        return "json", {"dtype": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return "json", value
    if isinstance(value, (list, tuple)):
        return "json", [_encode(v, {}, why)[1] for v in value]
    kind = "a lambda" if getattr(value, "__name__", "") == "<lambda>" else f"an object of type {type(value).__name__}"
    raise InvalidArgumentError(f"{why} holds {kind}, which cannot be written as data")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        dtype = getattr(torch, str(value.get("dtype")), None)
        if set(value) != {"dtype"} or not isinstance(dtype, torch.dtype):
            raise InvalidArgumentError(f"deepinv argument {value!r} is not a dtype such as {{'dtype': 'float32'}}")
        return dtype
    return value


def _argument_names(cls: type, obj: Any = None) -> list[str]:
    """The constructor arguments a config records for ``cls`` (LinearPhysics' solver settings where
    ``cls`` passes keyword arguments on, and ``obj``, if given, has them)."""
    params = inspect.signature(cls.__init__).parameters
    names = [p for p, v in params.items() if p not in _SKIPPED and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    if any(v.kind == v.VAR_KEYWORD for v in params.values()):
        names += [p for p in _SOLVER_ARGS if p not in params and (obj is None or hasattr(obj, p))]
    return names


def _arguments(obj: Any, cls: type, state: Mapping[str, torch.Tensor], why: str) -> tuple[dict, dict]:
    """(JSON args, tensor args) of ``obj``, read back from its attributes through ``cls.__init__``'s signature."""
    name, derived = cls.__name__, _derived(obj, cls.__name__)
    args, tensors = {}, {}
    for arg in _argument_names(cls, obj):
        attribute = _ALIASES.get(name, {}).get(arg, arg)
        if arg not in derived and not hasattr(obj, attribute):
            raise InvalidArgumentError(f"{why}: its argument {arg!r} is not kept on the object: it cannot be read back")
        value = derived[arg] if arg in derived else getattr(obj, attribute)
        kind, encoded = _encode(value, state, f"{why}: its argument {arg!r}")
        (tensors if kind == "tensor" else args)[arg] = encoded
    return args, tensors


def _foreign_callables(module: torch.nn.Module, why: str) -> None:
    """Refuse functions that are not deepinv's own (a lambda passed in, a sensor model of the user's)."""
    for path, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr.startswith("_"):
                continue
            for v in value.values() if isinstance(value, dict) else [value]:
                own = str(getattr(v, "__module__", "")).startswith("deepinv.")
                if own or not callable(v) or isinstance(v, (torch.nn.Module, type)):
                    continue
                kind = "a lambda" if getattr(v, "__name__", "") == "<lambda>" else f"the callable {v!r}"
                where = f"its {path}" if path else "its"
                if path.startswith("noise_model"):
                    where = f"its noise model {type(sub).__name__}'s"
                raise InvalidArgumentError(f"{why}: {where} attribute {attr!r} holds {kind}, which cannot be written as data")


def physics_config(physics: Any, verify: bool = True) -> dict[str, Any]:
    """The JSON config of a deepinv ``LinearPhysics`` (see the module docstring). With ``verify``
    it is rebuilt from the config and its state and compared, so a bad save is refused before it
    writes anything. InvalidArgumentError naming the class and the argument if it cannot be saved."""
    name = type(physics).__name__
    why = f"deepinv physics {name} cannot be saved"
    try:
        cls = _resolve(name, "LinearPhysics")
    except InvalidArgumentError:
        raise InvalidArgumentError(f"{why}: only deepinv.physics' own LinearPhysics classes can be rebuilt") from None
    if cls is not type(physics):
        raise InvalidArgumentError(f"{why}: its class is not deepinv.physics.{name} itself")
    _foreign_callables(physics, why)
    state = physics.state_dict(keep_vars=True)
    args, tensors = _arguments(physics, cls, state, why)
    noise = physics.noise_model
    noise_name = type(noise).__name__
    try:
        noise_cls = _resolve(noise_name, "NoiseModel", NOISE_MODELS)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"{why}: its noise model {noise_name} is not one of {list(NOISE_MODELS)}") from None
    noise_state = {k: v for k, v in state.items() if k.startswith("noise_model.")}
    noise_args, noise_tensors = _arguments(noise, noise_cls, noise_state, f"{why}: its noise model {noise_name}")
    noise_config = {"class": noise_name, "args": noise_args, "tensor_args": noise_tensors, "rng": noise.rng is not None}
    config = {"type": "deepinv", "class": name, "args": args, "tensor_args": tensors, "noise": noise_config}
    if verify:
        _verify(physics, config, why)
    return config


def physics_from_config(config: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None) -> Any:
    """Rebuild the physics of :func:`physics_config` from it and its saved ``state`` (the ``operator.*``
    tensors without the prefix), bit-exact. Only deepinv.physics LinearPhysics classes and the
    :data:`NOISE_MODELS` are built; anything else is an InvalidArgumentError."""
    keys = {"type", "class", "args", "tensor_args", "noise"}
    noise = config.get("noise") if isinstance(config, Mapping) else None
    if not isinstance(config, Mapping) or set(config) != keys or not isinstance(noise, Mapping):
        raise InvalidArgumentError(f"a deepinv operator config needs exactly the keys {sorted(keys)}, got {config!r}")
    cls = _resolve(config["class"], "LinearPhysics")
    noise_cls = _resolve(noise.get("class"), "NoiseModel", NOISE_MODELS)
    state = dict(state or {})

    def build(spec: Mapping[str, Any], owner: type) -> dict[str, Any]:
        args, tensors = spec.get("args"), spec.get("tensor_args")
        if not isinstance(args, Mapping) or not isinstance(tensors, Mapping):
            raise InvalidArgumentError(f"deepinv {owner.__name__}: 'args' and 'tensor_args' must be objects")
        unknown = sorted(map(str, (set(args) | set(tensors)) - set(_argument_names(owner))))
        if unknown or not all(isinstance(k, str) for k in tensors.values()):
            raise InvalidArgumentError(f"deepinv {owner.__name__} has no arguments {unknown} (or a state key is no string)")
        missing = sorted(set(tensors.values()) - set(state))
        if missing:
            raise InvalidArgumentError(f"deepinv {owner.__name__} needs the saved operator tensors {missing}, not given")
        return {**{k: _decode(v) for k, v in args.items()}, **{k: state[key] for k, key in tensors.items()}}

    rng = torch.Generator() if noise.get("rng") else None
    noise_args = {**build(noise, noise_cls), **({"rng": rng} if rng is not None else {})}
    physics_args = build(config, cls)
    try:
        physics = cls(**physics_args, noise_model=noise_cls(**noise_args))
        if state:
            _load(physics, state)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise InvalidArgumentError(f"deepinv {cls.__name__} cannot be rebuilt from its config and state: {err}") from None
    if rng is not None:  # the noise starts from its saved initial random state, as after reset_rng()
        rng.set_state(physics.noise_model.initial_random_state.cpu())
    return physics


def _load(physics: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` into the built tensors, which keep the memory layout of deepinv's construction
    (a transposed matrix stays transposed, so products round the same); a new dtype is assigned."""
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(floats) == 1:  # a network in float64: its physics too
        dtype = floats.pop()
        physics._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
    live = physics.state_dict()
    fits = all(k in live and live[k].dtype == v.dtype and live[k].shape == v.shape for k, v in state.items())
    physics.load_state_dict(state, strict=True, assign=not fits)


def _describe(value: Any) -> Any:
    """A comparable form of an attribute (tensors and generators are compared through the state)."""
    if isinstance(value, (torch.Tensor, torch.Generator, torch.nn.Module, torch.device)):
        return None  # tensors and generators are compared through the state; rebuilt on the CPU
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _verify(physics: Any, config: dict[str, Any], why: str) -> None:
    """Rebuild ``physics`` from ``config`` and its state; refuse unless state and settings are identical."""
    saved = {k: v.detach().cpu() for k, v in physics.state_dict().items()}
    try:
        twin = physics_from_config(config, saved)
    except Exception as err:  # noqa: BLE001 - any failure means the config does not rebuild it
        raise InvalidArgumentError(f"{why}: rebuilding it from its recorded arguments failed ({err})") from None
    again = twin.state_dict()
    for key, tensor in saved.items():
        if key not in again or again[key].dtype != tensor.dtype or not torch.equal(again[key], tensor):
            raise InvalidArgumentError(f"{why}: its state {key!r} differs after a rebuild")
    modules = dict(twin.named_modules())
    for path, sub in physics.named_modules():
        for attr, value in vars(sub).items():
            if attr.startswith("_") or attr == "training" or attr in _RUNTIME.get(type(sub).__name__, ()):
                continue
            other = getattr(modules.get(path), attr, None)
            if _describe(value) != _describe(other):
                raise InvalidArgumentError(
                    f"{why}: its attribute {'.'.join(filter(None, [path, attr]))!r} is {_describe(value)!r} but "
                    f"{_describe(other)!r} after a rebuild (set after construction, or an argument not read back)"
                )
