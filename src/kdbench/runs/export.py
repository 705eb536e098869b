"""Export trained models to ONNX (float32, and int8 by ONNX Runtime's dynamic quantisation).

Every family is exported from its members as eval-mode `nn.Module`s (BatchNorm with its running
statistics) by `torch.onnx.export`, unless it writes its own graph (`StackModel.onnx`: the fully
connected family writes MatMul, Add, Relu, which ONNX Runtime's dynamic quantisation turns to
int8, where the exporter's Gemm would stay float32). An ensemble averages its members' softmax
outputs. Either way the file is checked against eager PyTorch on the test set before it is
reported. The input `images` is shaped as the members take it: `[N, C, H, W]` for images.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdbench.data.datasets import preprocessing
from kdbench.engine.modules import Ensemble
from kdbench.engine.stack_model import StackModel
from kdbench.runs.resources import time_per_image
from kdbench.runs.store import SUMMARY, atomic_write, read_config, read_run_config, read_summary

OPSET = 17


Members = list[list[torch.Tensor]]  # each member's tensors, in its family's checkpoint order


def as_module(members: Members, family: StackModel) -> nn.Module:
    """One model (or an ensemble of them) of `family` as an eval-mode module."""
    modules = [family.member([p.unsqueeze(0) for p in m], 0).eval() for m in members]
    return modules[0] if len(modules) == 1 else Ensemble(modules).eval()


def _module_onnx(members: Members, family: StackModel):
    """`torch.onnx.export` of the module (its TorchScript exporter: the export-based one needs
    onnxscript, one more dependency for the same graph)."""
    import onnx  # loads slowly: only when a model is exported

    module, buf = as_module(members, family), io.BytesIO()
    output = "logits"  # an ensemble's too: the log of its mean probability (`Ensemble`)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module, (torch.zeros(1, *family.input_shape),), buf, dynamo=False,
            input_names=["images"], output_names=[output], opset_version=OPSET,
            dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}},
        )  # fmt: skip
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    return model


def onnx_model(members: Members, family: StackModel):
    """ONNX graph: input `images` `[N, *input_shape]` -> `logits` (of one network, or of an
    ensemble: the log of its members' mean softmax). The family's own graph where it writes one
    (`StackModel.onnx`), else `torch.onnx.export` of its member modules."""
    own = family.onnx(members, OPSET)
    return own if own is not None else _module_onnx(members, family)


def reference_outputs(members: Members, x: torch.Tensor, family: StackModel) -> np.ndarray:
    """What the ONNX graph must produce, computed in eager PyTorch on inputs shaped as the
    members take them."""
    with torch.no_grad():
        return as_module(members, family)(x.reshape(len(x), *family.input_shape)).numpy()


def write_onnx(
    members: Members, path: Path, family: StackModel, metadata: dict[str, str] | None = None
) -> Path:
    """The ONNX file; `metadata` goes into its `metadata_props` (what a deployment needs to
    know: preprocessing, classes, role, error, configuration hash)."""
    return _save(onnx_model(members, family), path, metadata)


def _save(model, path: Path, metadata: dict[str, str] | None = None) -> Path:
    if metadata:
        from onnx import helper  # loads slowly: only when a model is exported

        helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
    atomic_write(Path(path), model.SerializeToString())
    return Path(path)


def config_hash(config: dict) -> str:
    """SHA-256 of a run's resolved configuration (canonical JSON): which run a file came from."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def model_card(facts: dict) -> str:
    """MODEL_CARD.md: what the exported model is, how well it does, what it costs."""
    ci = facts.get("row_ci95_pct")
    spread = f" (95% CI of the row over repeats {ci})" if ci else ""
    lines = [
        f"# {facts['role']}, repeat {facts['repeat']} — kdbench export",
        "",
        f"- **File**: `{facts['file']}` (ONNX opset {OPSET}, {facts['bytes']:,} bytes,"
        f" {facts['params']:,} parameters)",
        f"- **Input**: `images`, float32 `[N, {facts['input']}]`: {facts['preprocessing']}",
        f"- **Output**: {facts['output']} over {facts['classes']} classes",
        f"- **Test error**: {facts['test_error_pct']}% for this model; its row's mean"
        f" {facts['row_mean_pct']}%{spread}",
        f"- **Latency**: {facts['latency_us']:.0f} µs per image at batch 1 in ONNX Runtime,"
        " one thread",
        f"- **Trained by**: kdbench {facts['kdbench']}, configuration SHA-256"
        f" `{facts['config_sha256']}` (the run's `config.json`)",
    ]
    q = facts.get("int8")
    if q:
        ops = ", ".join(q["ops"]) or "none: every layer stayed float32"
        lines.insert(
            5,
            f"- **int8**: `{q['file']}` ({q['bytes']:,} bytes), test error {q['test_error_pct']}%"
            f" (ONNX Runtime's dynamic quantisation; integer operators: {ops})",
        )
    return "\n".join(lines) + "\n"


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the weights (ONNX Runtime's own quantiser)."""
    import logging

    # onnx and onnxruntime load slowly: imported where used, so a training run never pays
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # it advises shape pre-processing on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return Path(dst)


def quantized_ops(path: Path) -> list[str]:
    """The integer operators of a quantised file (MatMulInteger, ConvInteger): which layers ONNX
    Runtime's dynamic quantisation turned to int8; the rest stay float32."""
    import onnx  # loads slowly: only when a model is exported

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node if "Integer" in n.op_type})


def session(path: Path, threads: int = 1):
    import onnxruntime as ort  # loads slowly: only when a model is run

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})[0]


def export(
    run_dir: Path,
    role: str,
    repeat: int,
    members: Members,
    path: Path,
    splits,
    family: StackModel,
    int8: bool = False,
) -> dict:
    """One model of a run (`members`, from `load_members`; `family`, its architecture) to ONNX
    with its metadata and MODEL_CARD.md beside it, checked against eager PyTorch on the test
    set. Returns what was measured."""

    run_config = read_run_config(run_dir)
    x, y = splits.x_test.reshape(len(splits.x_test), *family.input_shape), splits.y_test.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = onnx_model(members, family)  # built once: a module's export traces it
    _save(graph, path)
    reference = reference_outputs(members, x, family)
    sess = session(path)
    got = run(sess, x.numpy())
    error = float((got.argmax(1) != y).mean())
    row = read_summary(run_dir).rows[role] if (run_dir / SUMMARY).is_file() else None
    ci = row.ci95_pct if row else None
    one = x[:1].numpy()
    facts = {
        "role": role,
        "repeat": repeat,
        "file": path.name,
        "bytes": 0,
        "params": family.size().params * len(members),
        "input": ", ".join(map(str, family.input_shape)),
        "classes": int(got.shape[1]),
        "preprocessing": preprocessing(read_config(run_dir).data.dataset),
        "output": "logits" if len(members) == 1 else "logits (log of the members' mean softmax)",
        "test_error_pct": f"{100 * error:.2f}",
        "row_mean_pct": f"{row.mean_pct:.2f}" if row and row.mean_pct is not None else "–",
        "row_ci95_pct": f"{ci[0]:.2f}–{ci[1]:.2f}%" if ci else "",
        "latency_us": time_per_image(lambda: run(sess, one), 1)["median_us"],
        "kdbench": run_config.get("environment", {}).get("kdbench", "?"),
        "config_sha256": config_hash(run_config["config"]),
    }
    keys = ("role", "repeat", "preprocessing", "classes", "test_error_pct", "row_mean_pct",
            "row_ci95_pct", "config_sha256")  # fmt: skip
    _save(graph, path, {k: facts[k] for k in keys})
    facts["bytes"] = path.stat().st_size
    info = {
        "role": role,
        "repeat": repeat,
        "onnx": str(path),
        "bytes": facts["bytes"],
        "max_abs_diff_vs_torch": float(np.abs(got - reference).max()),
        "test_error_torch": float((reference.argmax(1) != y).mean()),
        "test_error_onnx": error,
        "model_card": str(path.with_name("MODEL_CARD.md")),
    }
    if int8:
        qpath = path.with_name(path.stem + "-int8.onnx")
        quantize_int8(path, qpath)
        q = run(session(qpath), x.numpy())
        info.update(
            onnx_int8=str(qpath),
            bytes_int8=qpath.stat().st_size,
            test_error_int8=float((q.argmax(1) != y).mean()),
            int8_ops=quantized_ops(qpath),
        )
        facts["int8"] = {"file": qpath.name, "bytes": info["bytes_int8"],
                         "test_error_pct": f"{100 * info['test_error_int8']:.2f}",
                         "ops": info["int8_ops"]}  # fmt: skip
    atomic_write(path.with_name("MODEL_CARD.md"), model_card(facts).encode())
    return info
