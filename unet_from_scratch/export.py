"""Export a trained U-Net for serving: ``python -m unet_from_scratch.export --checkpoint CKPT --format onnx|torchscript
--out FILE``.

What the exported graph holds:
- the whole forward pass, the input normalisation included: the model's ``input_mean``/``input_std`` buffers are
  applied inside it, so a server feeds images as training read them (float32 (N, C, H, W), integers divided by
  their type's maximum, as ``data.FolderDataset``) and gets logits (N, K, H_out, W_out);
- dynamic batch, height and width. The sides must be ones the network takes (``sizes``): multiples of 2^depth for
  "same" padding (output = input), 2^depth · b + 4 · (2^(depth+1) - 1) for "valid" (output = input - 2 · margin).
  Any other image is mirrored out to such a side first, as ``inference.predict_logits`` does (numpy's
  ``np.pad(..., mode="symmetric")``), and the output cropped back;
- metadata: ``class_names`` (JSON list, in output-channel order), ``in_channels``, ``num_classes``, ``padding``,
  ``depth``, ``grid_step`` (2^depth), ``context_margin``, ``smallest_input``, ``model_config`` and the
  normalisation ``input_mean``/``input_std`` (JSON; informational, already applied in the graph). ONNX keeps them in
  ``metadata_props`` (``onnxruntime``: ``session.get_modelmeta().custom_metadata_map``), TorchScript in the extra
  file ``metadata.json`` (``torch.jit.load(path, _extra_files={"metadata.json": ""})``).

Both formats are traced from one example input (the network has no data-dependent control flow; its size checks
run in Python at trace time, so the exported graph does not check sizes). ONNX needs the ``deploy`` extra
(``pip install "unet-from-scratch[deploy]"``: onnx and onnxruntime); after writing, the export is run once in
onnxruntime (or TorchScript) on two image sizes and compared with torch's logits.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from unet_from_scratch.predict import Parser

FORMATS = ("onnx", "torchscript")
OPSET = 17


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m unet_from_scratch.export",
        description="Export a trained U-Net (normalisation inside, dynamic height and width, class names in the "
        "metadata) to ONNX or TorchScript for CPU serving.",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by unet_from_scratch.train")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (needs the deploy extra) or torchscript")
    parser.add_argument("--out", required=True, help="the file to write (e.g. model.onnx, model.pt)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    return parser


def metadata(model) -> dict[str, str]:
    """The metadata of the module docstring, every value a string (ONNX's metadata_props hold strings)."""
    from unet_from_scratch import sizes

    depth, padding, extra = model.depth, model.padding, getattr(model, "extra_convs", 0)
    return {
        "class_names": json.dumps(model.class_names), "in_channels": str(model.in_channels),
        "num_classes": str(model.num_classes), "padding": padding, "depth": str(depth),
        "grid_step": str(sizes.grid_step(depth)), "context_margin": str(sizes.context_margin(depth, padding, extra)),
        "smallest_input": str(sizes.valid_input_size(1, depth, padding, extra)),
        "model_config": json.dumps(model.config),
        "input_mean": json.dumps(model.input_mean.tolist()), "input_std": json.dumps(model.input_std.tolist()),
        "normalization": "applied inside the graph: (x - input_mean) / input_std per channel",
    }  # fmt: skip


def traceable(model):
    """A copy of ``model`` in eval mode whose ``state_dict`` holds tensors only: the tracers refuse the class names'
    extra-state dict (they travel in the metadata instead). Same weights, buffers and forward."""
    import torch

    clone = copy.deepcopy(model).cpu().eval()
    base = type(model)
    plain = {"get_extra_state": torch.nn.Module.get_extra_state, "set_extra_state": torch.nn.Module.set_extra_state}
    clone.__class__ = type(base.__name__, (base,), plain)
    return clone


def example_sides(model) -> tuple[int, int]:
    """Two different valid input sides: the example the graph is traced with, and a second to check it with."""
    from unet_from_scratch import sizes

    depth, padding, extra = model.depth, model.padding, getattr(model, "extra_convs", 0)
    first = sizes.valid_input_size(max(64, 2 ** (depth + 2)), depth, padding, extra)
    return first, sizes.valid_input_size(first + 1, depth, padding, extra)


def export_onnx(model, path, opset: int = OPSET) -> None:
    """Write ``model`` to ``path`` as ONNX with dynamic batch/height/width and the metadata."""
    import warnings

    import onnx
    import torch

    net = traceable(model)
    side = example_sides(model)[0]
    example = torch.rand(1, model.in_channels, side, side)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "out_height", 3: "out_width"}}
    with warnings.catch_warnings():  # the tracer's notes on Python ints taken from shapes: the size checks
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset)  # fmt: skip
    graph = onnx.load(str(path))
    for key, value in metadata(model).items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.doc_string = "U-Net (unet-from-scratch): image (N, C, H, W) float32 -> logits (N, K, H_out, W_out)"
    onnx.save(graph, str(path))


def export_torchscript(model, path) -> None:
    """Write ``model`` to ``path`` as traced TorchScript with ``metadata.json`` as an extra file."""
    import warnings

    import torch

    net = traceable(model)
    side = example_sides(model)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, (torch.rand(1, model.in_channels, side, side),))
        torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(metadata(model))})


def run_exported(path, fmt: str, images):
    """Logits (numpy) of the exported file at ``path`` for ``images`` (N, C, H, W) float32 numpy, on the CPU."""
    import warnings

    import torch

    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": images})[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's notice that torch.export is newer
        return torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(images)).numpy()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from unet_from_scratch.training.checkpoint import CheckpointError, load_model

    try:
        model = load_model(args.checkpoint)
        if args.format == "onnx":
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise ValueError("--format onnx needs the deploy extra: pip install \"unet-from-scratch[deploy]\" "
                                 "(onnx, onnxruntime)") from None  # fmt: skip
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "onnx":
        export_onnx(model, out, args.opset)
    else:
        export_torchscript(model, out)
    a, b = example_sides(model)
    worst = []
    try:
        for h, w in ((a, b), (b, a)):
            images = torch.rand(1, model.in_channels, h, w)
            with torch.no_grad():
                expected = model(images).numpy()
            worst.append(float(np.abs(run_exported(out, args.format, images.numpy()) - expected).max()))
        check = f"checked on {a}x{b} and {b}x{a} inputs against torch: max |difference| {max(worst):.1e}"
    except ImportError:
        check = "not run (onnxruntime is not installed)"
    meta = metadata(model)
    smallest, step = int(meta["smallest_input"]), int(meta["grid_step"])
    print(f"Wrote {out} ({args.format}, {out.stat().st_size / 1e6:.1f} MB): classes {model.class_names}, "
          f"normalisation inside, dynamic height/width (sides {smallest}, {smallest + step}, {smallest + 2 * step}, "
          f"... every {step}); {check}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
