"""Run an exported model with onnxruntime, providers always chosen explicitly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, ModelInputError, OptionsError, SpecError
from .spec import ModelSpec, read_spec

__all__ = ["DEVICES", "resolve_providers", "check_graph", "FeatureModel"]

DEVICES = ("auto", "cpu", "cuda")
_CLASSES_KEY = "featurestore.classes"  # the metadata `featurestore package` writes (heads.package.CLASSES_KEY)


#: CUDA provider options: cuDNN picks the fastest convolution algorithm once per shape
#: (``EXHAUSTIVE``), and the memory arena grows by what is requested, not by powers of two.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kSameAsRequested",
                "do_copy_in_default_stream": "1"}


def resolve_providers(device: str = "auto", device_id: int = 0) -> list:
    """Execution providers for ``device``: ``cuda`` (error if unavailable), ``cpu``, or ``auto``.

    ``auto`` takes CUDA when onnxruntime offers it and a GPU answers, else the CPU.
    TensorRT is never picked implicitly. CUDA comes with :data:`CUDA_OPTIONS` and ``device_id``.
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise OptionsError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available and _cuda_device_present()
    if device == "cuda":
        if not cuda:
            raise BackendUnavailableError(
                "device 'cuda' was asked for but onnxruntime has no usable CUDAExecutionProvider "
                f"(available: {', '.join(available)}); use --device cpu or install onnxruntime-gpu with CUDA"
            )
    if device == "cuda" or (device == "auto" and cuda):
        return [("CUDAExecutionProvider", {"device_id": str(device_id), **CUDA_OPTIONS}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _cuda_device_present() -> bool:
    """Whether an NVIDIA driver exposes a GPU here (onnxruntime-gpu lists CUDA even without one)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return os.environ.get("CUDA_VISIBLE_DEVICES", "") != "-1" and gpus.is_dir() and any(gpus.iterdir())


def _ort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions onnxruntime raises for a file it cannot make a session of (plain ``Exception`` subclasses)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NotImplemented", "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name)) + (RuntimeError, ValueError)


def check_graph(session: Any, spec: ModelSpec, path: Path) -> None:
    """Refuse a model whose graph is not the one its spec describes (a spec copied onto another model).

    The graph must take one uint8 input named as the spec says, of shape ``(batch, H, W, C)``,
    and give every layer's output as float32 ``(batch, dim)`` (dimensions the graph leaves
    symbolic are not compared); a classifier from ``featurestore package`` gives ``label`` and
    ``probabilities`` instead.

    Raises
    ------
    SpecError
    """
    def refuse(what: str) -> None:
        raise SpecError(f"model {path} does not match the featurestore spec it carries ({what}); it was not "
                        "written by `featurestore export` for that spec: export the model again")

    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != spec.input_name:
        refuse(f"inputs {[i.name for i in inputs]}, spec {spec.input_name!r}")
    if inputs[0].type != "tensor(uint8)":
        refuse(f"input {inputs[0].name!r} is {inputs[0].type}, not tensor(uint8)")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or any(isinstance(got, int) and got != want
                              for got, want in zip(shape[1:], spec.input_shape)):
        refuse(f"input shape {shape}, spec (batch, {', '.join(map(str, spec.input_shape))})")
    outputs = {output.name: output for output in session.get_outputs()}
    if _CLASSES_KEY in session.get_modelmeta().custom_metadata_map:  # `featurestore package`: label, probabilities
        if not {"label", "probabilities"} <= set(outputs) and set(outputs) != {"prediction"}:  # or a regression's
            refuse(f"a packaged head without outputs label and probabilities (or prediction): {sorted(outputs)}")
        return
    for layer in spec.layers:
        output = outputs.get(layer.output)
        if output is None:
            refuse(f"no output {layer.output!r}")
        if output.type != "tensor(float)":
            refuse(f"output {layer.output!r} is {output.type}, not tensor(float)")
        dims = list(output.shape)
        if layer.pooling == "none" and layer.stride is not None:  # unpooled maps (C, H, W) or tokens (L, C)
            if len(dims) not in (3, 4):
                refuse(f"output {layer.output!r} has shape {dims}, spec an unpooled map or token sequence")
        elif len(dims) != 2 or (isinstance(dims[1], int) and dims[1] != layer.dim):
            refuse(f"output {layer.output!r} has shape {dims}, spec (batch, {layer.dim})")


class FeatureModel:
    """An exported model and its spec, ready to turn uint8 image batches into features.

    Parameters
    ----------
    path : str or Path
        ONNX file written by ``featurestore export``.
    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where to run it.
    intra_op_threads : int, optional
        onnxruntime's intra-op threads (default: onnxruntime's choice, all cores).
    io_binding : bool or None, default=None
        Run through onnxruntime's IO binding: the uint8 batch is copied to the device once,
        outputs stay on the device and are copied back once per batch. None: on when the
        session runs on CUDA. The same code path runs on the CPU provider (and gives
        bit-equal features there).
    device_id : int, default=0
        CUDA device.

    Examples
    --------
    >>> model = FeatureModel("mnv2.onnx", device="cpu")  # doctest: +SKIP
    >>> feats = model.run(batch)  # batch: uint8 (N, H, W, 3)  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, device: str = "auto", intra_op_threads: int | None = None,
                 io_binding: bool | None = None, device_id: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.spec: ModelSpec = read_spec(self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        self.providers = resolve_providers(device, device_id)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except _ort_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecError(f"onnxruntime cannot load model {self.path} ({first[:200]}); give the file "
                            "`featurestore export` wrote") from None
        self.outputs = [layer.output for layer in self.spec.layers]
        check_graph(self.session, self.spec, self.path)
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device_id = device_id
        self.io_binding = self.on_cuda if io_binding is None else bool(io_binding)

    def check_batch(self, images: np.ndarray) -> None:
        """Raise :class:`ModelInputError` unless ``images`` is uint8 ``(N, H, W, C)`` of the model's size."""
        expected = self.spec.input_shape
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ModelInputError(
                f"model {self.path.name} takes uint8 images; got {getattr(images, 'dtype', type(images).__name__)}"
            )
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ModelInputError(
                f"model {self.path.name} takes images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}); "
                f"got {images.shape}. Decode with featurestore.decode_image(path, model.spec.preprocessing)"
            )

    def run(self, images: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Features of a batch: a dict from output name to ``float32`` array ``(N, dim)``."""
        self.check_batch(images)
        names = list(outputs) if outputs is not None else self.outputs
        images = np.ascontiguousarray(images)
        if self.io_binding:
            return self._run_bound(images, names)
        values = self.session.run(names, {self.spec.input_name: images})
        return dict(zip(names, values))

    def run_tensor(self, images: Any, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Features of a batch that already lies on this session's device (IO binding, no copy in).

        Parameters
        ----------
        images : torch.Tensor
            Contiguous ``uint8`` ``(N, H, W, C)`` tensor on the session's device (the CPU, or
            the CUDA device ``device_id``), e.g. from :class:`~featurestore.device_decode.DeviceDecoder`.
            Only its pointer, shape and device are read; this module does not import torch.
        outputs : sequence of str, optional
            Output names (default: every layer).

        Returns
        -------
        dict
            Output name to ``float32`` array ``(N, dim)`` in host memory.
        """
        expected = self.spec.input_shape
        device = "cuda" if self.on_cuda else "cpu"
        where = getattr(images, "device", None)
        if str(getattr(images, "dtype", "")) != "torch.uint8" or tuple(images.shape[1:]) != expected \
                or len(images.shape) != 4:
            got = f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
            raise ModelInputError(f"model {self.path.name} takes a uint8 tensor of shape (batch, {expected[0]}, "
                                  f"{expected[1]}, {expected[2]}); got {got}")
        if getattr(where, "type", None) != device or (self.on_cuda and (where.index or 0) != self.device_id):
            raise ModelInputError(f"model {self.path.name} runs on {device}:{self.device_id if self.on_cuda else 0}; "
                                  f"the batch lies on {where}")
        if not images.is_contiguous():
            raise ModelInputError("the batch must be contiguous (tensor.contiguous())")
        names = list(outputs) if outputs is not None else self.outputs
        binding = self.session.io_binding()
        binding.bind_input(self.spec.input_name, device, self.device_id if self.on_cuda else 0, np.uint8,
                           list(images.shape), images.data_ptr())
        for name in names:
            binding.bind_output(name, device, self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def _run_bound(self, images: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """IO binding: one host-to-device copy of the uint8 batch, one device-to-host copy per output."""
        import onnxruntime as ort

        device = "cuda" if self.on_cuda else "cpu"
        binding = self.session.io_binding()
        if self.on_cuda:
            binding.bind_ortvalue_input(self.spec.input_name,
                                        ort.OrtValue.ortvalue_from_numpy(images, device, self.device_id))
        else:
            binding.bind_cpu_input(self.spec.input_name, images)
        for name in names:
            binding.bind_output(name, device, self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))
