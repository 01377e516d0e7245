"""ONNX uploads: a model from any framework, converted to torch ops as data.

Why ONNX and not TorchScript or torch.export: an ONNX file is a protobuf *graph* (op names,
attributes and weight tensors). Parsing it runs none of the uploader's code, and onnx2torch
turns each node into a stock torch module and wires them into a ``torch.fx.GraphModule`` (a
plain Python graph of ``call_module`` nodes built here, from our code). ``torch.jit.load`` runs
a TorchScript program, and ``torch.export.load`` unpickles with ``weights_only=False``: both
execute whatever the file contains, so robaudit never calls them on an upload.

What is accepted (docs/onnx.md says the same to users):

* the ``ai.onnx`` domain at opsets ``MIN_OPSET``..``MAX_OPSET``: what torch's legacy exporter
  (``dynamo=False``) and its default dynamo exporter write (opset 20 in torch 2.14, or the
  ``opset_version`` asked for; 17 to 22 are tested);
* weights inside the file: a tensor stored as external data names a path, and a path in an
  upload could point anywhere on the server;
* exactly one float32 input (N, C, H, W), exactly one output (N, classes). A graph exported with a
  fixed batch size runs in chunks of that size (``FixedBatch``); a dynamic batch dimension is faster.

onnx2torch 1.5 stops at opset 17 for a few ops. The converters below close that gap for the
graphs torch writes: the Reduce family from v18 (axes became an input), Reshape with
``allowzero=1`` (the dynamo exporter sets it on every Reshape), AveragePool v19 (dilations),
Cast v19+ (float8 ``saturate``) and, generically, any newer op version whose inputs,
outputs and attributes are unchanged from one onnx2torch converts (ONNX added element types),
which reuses that converter. Anything else is refused with the op type, domain and opset.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robaudit.models.checkpoint import CheckpointError

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, TensorProto

# Protobuf cannot hold a message over 2 GiB, so no valid ONNX file without external data is larger.
MAX_ONNX_BYTES = 2**31 - 1
# The largest published robust ImageNet models export to a few thousand nodes.
MAX_NODES = 50_000
MIN_OPSET, MAX_OPSET = 7, 22
ONNX_DOMAINS = ("", "ai.onnx")
FIELD1_VARINT = 0x08   # protobuf tag of ModelProto.ir_version, the first field every exporter writes
SAVE_HINT = ("save it with the weights inside the file: onnx.save(model, path, save_as_external_data=False) "
             "or torch.onnx.export(..., external_data=False)")
DYNAMIC_BATCH_HINT = ("export it with a dynamic batch dimension: torch.onnx.export(model, (x,), path, "
                      "dynamic_shapes=({0: torch.export.Dim('batch')},)), or with dynamo=False, "
                      "input_names=['x'], dynamic_axes={'x': {0: 'batch'}}")


def _require_onnx(name: str) -> None:
    try:
        import onnx  # noqa: F401
        import onnx2torch  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{name} is an ONNX model, but ONNX support is not installed: "
                              "pip install 'robaudit[onnx]'") from None


def sniff_onnx(path: Path) -> bool:
    """Whether ``path`` parses as an ONNX ModelProto with a graph and an opset.

    Raises CheckpointError for a file that starts like one (the ir_version tag every exporter writes
    first) but does not parse: that is a truncated or damaged ONNX file, not some other format.
    """
    return _read_model(path) is not None


def _read_model(path: Path) -> ModelProto | None:
    """The parsed ModelProto, None for a file that is not ONNX, or CheckpointError (see sniff_onnx)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        first = fh.read(1)
    starts_like_onnx = first == bytes([FIELD1_VARINT])
    if size > MAX_ONNX_BYTES:
        if starts_like_onnx:
            raise CheckpointError(f"{path.name} is larger than 2 GiB, which no ONNX file with its weights "
                                  f"inside can be; {SAVE_HINT}")
        return None
    try:
        import onnx
    except ImportError:
        if starts_like_onnx:
            _require_onnx(path.name)
        return None
    model: ModelProto | None
    try:
        # Parsed from bytes, never onnx.load(path): that would follow external-data paths.
        model = onnx.ModelProto.FromString(path.read_bytes())
    except Exception:   # protobuf raises DecodeError, or RuntimeError from its C parser
        model = None
    if model is not None and model.ir_version > 0 and len(model.graph.node) > 0 and len(model.opset_import) > 0:
        return model
    if starts_like_onnx:
        raise CheckpointError(f"{path.name} is truncated or corrupt: it starts like an ONNX model but does not "
                              "parse as one (a graph with nodes and an opset)")
    return None


def _parse(path: Path) -> ModelProto:
    _require_onnx(path.name)
    model = _read_model(path)
    if model is None:
        raise CheckpointError(f"{path.name} is not an ONNX model")
    return model


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies) inside it."""
    from onnx import AttributeProto
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in the file: initializers and tensor-valued node attributes."""
    from onnx import AttributeProto
    for g in _graphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in g.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == AttributeProto.TENSORS:
                    yield from attr.tensors
                elif attr.type == AttributeProto.SPARSE_TENSOR:
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices


def _check_limits(model: ModelProto, name: str, size: int) -> None:
    """Refuse external data, and graphs that claim more than the file can hold."""
    from onnx import TensorProto, helper
    nodes = sum(len(g.node) for g in _graphs(model.graph))
    if nodes > MAX_NODES:
        raise CheckpointError(f"{name}: its graph has {nodes} nodes; at most {MAX_NODES} are accepted")
    claimed = 0
    for tensor in _tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            raise CheckpointError(f"{name} stores tensor {tensor.name[:80]!r} as external data (a separate file "
                                  f"the upload cannot bring along); {SAVE_HINT}")
        if any(d < 0 for d in tensor.dims):
            raise CheckpointError(f"{name} is corrupt: tensor {tensor.name[:80]!r} has a negative dimension")
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            itemsize = 1
        claimed += math.prod(tensor.dims) * itemsize
    # Every element of a stored tensor is in the file, in at least one byte (an int64 zero as a typed
    # varint: 8 claimed bytes in 1, hence the slack), so a claim beyond it is a corrupt or hostile file.
    if claimed > 8 * size + 1024:
        raise CheckpointError(f"{name} is corrupt: its tensors claim {claimed} bytes but the file has {size}")


def _opsets(model: ModelProto, name: str) -> dict[str, int]:
    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    onnx_opset = opsets.get("")
    if onnx_opset is None:
        raise CheckpointError(f"{name}: the model imports no ai.onnx opset")
    if not MIN_OPSET <= onnx_opset <= MAX_OPSET:
        raise CheckpointError(f"{name} uses ai.onnx opset {onnx_opset}; robaudit converts opsets {MIN_OPSET} to "
                              f"{MAX_OPSET}: re-export with torch.onnx.export(..., opset_version=20)")
    return opsets


def _check_io(model: ModelProto, name: str) -> None:
    from onnx import TensorProto
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]   # IR < 4 lists weights as inputs too
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{name}: the graph has {len(inputs)} input(s) and {len(graph.output)} output(s); "
                              "robaudit needs exactly one image input and one logits output")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        raise CheckpointError(f"{name}: the graph input {inputs[0].name!r} has element type "
                              f"{TensorProto.DataType.Name(tensor_type.elem_type)}; robaudit feeds float32 images")
    dims = tensor_type.shape.dim
    if tensor_type.HasField("shape") and len(dims) != 4:
        raise CheckpointError(f"{name}: the graph input {inputs[0].name!r} has rank {len(dims)}; robaudit feeds "
                              "images of shape (N, C, H, W)")


def _fixed_batch(model: ModelProto) -> int | None:
    """The batch size the graph's input declares, when it fixes one (an export without a dynamic batch)."""
    weights = {t.name for t in model.graph.initializer}
    dims = next(v for v in model.graph.input if v.name not in weights).type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


class FixedBatch(nn.Module):
    """Runs a graph exported with a fixed batch size B on any batch: in chunks of B, the last one
    padded with copies of its final image whose outputs are dropped.

    Exact for a classifier in eval mode (each image's logits depend on that image only), so the
    input gradients are the graph's own; slower than a dynamic-batch export by the padding and the
    number of calls.
    """

    def __init__(self, net: nn.Module, batch: int) -> None:
        super().__init__()
        self.net, self.batch = net, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chunk in torch.split(x, self.batch):
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            outputs.append(self.net(chunk)[:n])
        return torch.cat(outputs)


# ---------------------------------------------------------------------------------------------
# Converters onnx2torch lacks. Registered once, in onnx2torch's registry, under ai.onnx.

class ReduceAxesInput(nn.Module):
    """ReduceMean/Max/Min/... from opset 18, where ``axes`` is an optional input, not an attribute."""

    def __init__(self, reduce: Callable[[torch.Tensor, list[int], bool], torch.Tensor], keepdims: int,
                 noop_with_empty_axes: int) -> None:
        super().__init__()
        self.reduce, self.keepdims, self.noop = reduce, bool(keepdims), bool(noop_with_empty_axes)

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        if axes is None or axes.numel() == 0:
            if self.noop:
                return x
            dims = list(range(x.dim()))
        else:
            dims = sorted(int(a) % x.dim() for a in axes.tolist())
        return self.reduce(x, dims, self.keepdims)


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):   # torch.prod reduces one dimension at a time
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


_REDUCTIONS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
}


class ReshapeAllowZero(nn.Module):
    """ONNX Reshape. ``allowzero=1``: a 0 in the shape is a zero-size dimension, which is exactly
    torch.reshape; ``allowzero=0``: a 0 copies the input's dimension at that position."""

    def __init__(self, allowzero: int) -> None:
        super().__init__()
        self.allowzero = bool(allowzero)

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        dims = [int(d) for d in shape.tolist()]
        if not self.allowzero:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return torch.reshape(x, dims)


def _onnx2torch_api() -> tuple[Any, Any, Any, Any]:
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, add_converter, get_converter
    from onnx2torch.utils.common import OperationConverterResult
    return add_converter, get_converter, OperationConverterResult, _CONVERTER_REGISTRY


class UnsupportedOp(NotImplementedError):
    """A node no converter handles exactly; the message is what the user is told."""


def _reduce_converter(op_type: str) -> Callable[[Any, Any], Any]:
    _, _, result, _ = _onnx2torch_api()
    from onnx2torch.utils.common import onnx_mapping_from_node

    def convert(node: Any, graph: Any) -> Any:
        attrs = node.attributes
        module = ReduceAxesInput(_REDUCTIONS[op_type], attrs.get("keepdims", 1), attrs.get("noop_with_empty_axes", 0))
        return result(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))
    return convert


def _reshape_converter(node: Any, graph: Any) -> Any:
    _, _, result, _ = _onnx2torch_api()
    from onnx2torch.utils.common import onnx_mapping_from_node
    return result(torch_module=ReshapeAllowZero(node.attributes.get("allowzero", 0)),
                  onnx_mapping=onnx_mapping_from_node(node))


def _average_pool_converter(node: Any, graph: Any) -> Any:
    # v19 added dilations; torch's avg_pool has none, so only the undilated pool is the v11 op.
    dilations = node.attributes.get("dilations")
    if dilations is not None and any(d != 1 for d in dilations):
        raise UnsupportedOp(f"AveragePool with dilations {list(dilations)}")
    _, get_converter, _, _ = _onnx2torch_api()
    return get_converter("AveragePool", 11)(node, graph)


# 8- and 4-bit element types (float8 from ONNX 1.14, int4 and float4 later): Cast v19 added `saturate`
# for float8, and torch has no exact cast to any of them.
_SMALL_TYPES = frozenset(range(17, 30))


def _cast_converter(node: Any, graph: Any) -> Any:
    if int(node.attributes.get("to", 1)) in _SMALL_TYPES:
        raise UnsupportedOp("Cast to an 8- or 4-bit element type")
    _, get_converter, _, _ = _onnx2torch_api()
    return get_converter("Cast", 13)(node, graph)


def _onnx_versions(op_type: str) -> list[int]:
    from onnx import defs
    return sorted({s.since_version for s in defs.get_all_schemas_with_history()
                   if s.name == op_type and s.domain == ""})


_registered = False


def _register_converters() -> None:
    """Add this module's converters to onnx2torch's registry (once per process)."""
    global _registered
    if _registered:
        return
    add_converter, get_converter, _, registry = _onnx2torch_api()
    from onnx2torch.node_converters.registry import OperationDescription

    def install(op_type: str, version: int, converter: Callable[[Any, Any], Any]) -> None:
        key = OperationDescription(domain="", operation_type=op_type, version=version)
        if key in registry:
            # onnx2torch's Reshape v14 refuses allowzero=1; ours does both, so it takes the slot.
            if op_type != "Reshape":
                return
            registry[key] = converter
        else:
            add_converter(op_type, version)(converter)

    for op_type in _REDUCTIONS:
        for version in _onnx_versions(op_type):
            if version >= 18:
                install(op_type, version, _reduce_converter(op_type))
    for version in _onnx_versions("Reshape"):
        if version >= 14:
            install("Reshape", version, _reshape_converter)
    for version in _onnx_versions("AveragePool"):
        if version >= 19:
            install("AveragePool", version, _average_pool_converter)
    for version in _onnx_versions("Cast"):
        if version >= 19:
            install("Cast", version, _cast_converter)
    _registered = True


def _signature(schema: Any) -> tuple[Any, ...]:
    attrs = [(a.name, a.type, a.required, a.default_value.SerializeToString())
             for a in sorted(schema.attributes.values(), key=lambda a: a.name)]
    return (attrs, [(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs],
            schema.min_input, schema.max_input, schema.min_output, schema.max_output)


def _type_only_alias(op_type: str, version: int) -> int | None:
    """The newest older version onnx2torch converts, if every step up to ``version`` left inputs,
    outputs and attributes unchanged (the new ONNX release only added element types)."""
    from onnx import defs
    _, _, _, registry = _onnx2torch_api()
    from onnx2torch.node_converters.registry import OperationDescription
    versions = [v for v in _onnx_versions(op_type) if v <= version]
    converted = [v for v in versions if OperationDescription("", op_type, v) in registry]
    if not converted:
        return None
    base = max(converted)
    chain = [_signature(defs.get_schema(op_type, v, "")) for v in versions if v >= base]
    return base if all(a == b for a, b in zip(chain, chain[1:])) else None


def _resolve_converters(model: ModelProto, opsets: dict[str, int], name: str) -> None:
    """Every node has an exact converter, or one line names the first that has none."""
    from onnx import defs
    add_converter, get_converter, _, _ = _onnx2torch_api()
    for graph in _graphs(model.graph):
        for node in graph.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            opset = opsets.get(domain)
            where = f"{node.op_type} (domain {domain or 'ai.onnx'}, opset {opset})"
            if opset is None:
                raise CheckpointError(f"{name}: node {node.name[:60]!r} uses {where}, whose opset the model "
                                      "does not import")
            try:
                get_converter(node.op_type, opset, domain)
                continue
            except NotImplementedError:
                pass
            version = None
            if domain == "":
                try:
                    version = defs.get_schema(node.op_type, opset, "").since_version
                except Exception:
                    version = None
            base = _type_only_alias(node.op_type, version) if version is not None else None
            if base is None:
                raise CheckpointError(f"{name}: unsupported ONNX op {where}: robaudit cannot convert it to "
                                      "torch exactly; export without it, or with opset 17 to 20")
            add_converter(node.op_type, version)(get_converter(node.op_type, base))


def _fold_identities_of_weights(graph: GraphProto) -> None:
    """Drop ``Identity(weight)`` nodes, wiring their consumers to the weight itself.

    torch's legacy exporter at opset 19+ writes one for every shared or renamed weight, and onnx2torch's
    Conv/Gemm converters want the weight as an initializer, not a node output. Exact: Identity copies.
    """
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.domain in ONNX_DOMAINS and len(n.input) == 1
             and n.input[0] in weights and n.output[0] not in outputs}
    if not alias:
        return
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)


def _canonical_domain(model: ModelProto) -> None:
    """Spell the default domain "" everywhere: ONNX allows "ai.onnx" too, onnx2torch looks up ""."""
    for opset in model.opset_import:
        if opset.domain == "ai.onnx":
            opset.domain = ""
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain == "ai.onnx":
                node.domain = ""


def load_onnx(path: str | Path) -> nn.Module:
    """An ONNX file as a torch module in eval mode: float32 (N, C, H, W) in, logits out.

    The graph is parsed as protobuf data, checked (external data, limits, one input and one output,
    every op convertible exactly) and converted by onnx2torch into a ``torch.fx.GraphModule`` of
    stock torch modules. Raises CheckpointError with one line for anything it cannot take.
    """
    return _load(Path(path))[0]


def load_onnx_classifier(path: str | Path, *, in_channels: int, num_classes: int,
                         input_size: int | None = None) -> nn.Module:
    """``load_onnx`` plus the checks a classifier for this dataset needs: the graph's declared
    channels and size agree, and a batch gives (N, num_classes) logits."""
    path = Path(path)
    model, declared = _load(path)
    channels, height, width = declared
    if channels is not None and channels != in_channels:
        raise CheckpointError(f"{path.name}: the graph takes {channels}-channel images but the dataset has "
                              f"{in_channels} channel(s)")
    size = input_size or (height if height == width else None)
    if size is None:
        raise CheckpointError(f"{path.name}: the graph does not fix its image size; give the input size")
    if height is not None and height != size or width is not None and width != size:
        raise CheckpointError(f"{path.name}: the graph takes {height}x{width} images but the dataset's are "
                              f"{size}x{size}")
    check_onnx_output(model, in_channels, size, num_classes)
    return model


def _declared_shape(model: ModelProto) -> tuple[int | None, int | None, int | None]:
    """(C, H, W) of the single input where the graph fixes them."""
    weights = {t.name for t in model.graph.initializer}
    dims = next(v for v in model.graph.input if v.name not in weights).type.tensor_type.shape.dim
    if len(dims) != 4:
        return None, None, None
    c, h, w = (int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[1:])
    return c, h, w


def _load(path: Path) -> tuple[nn.Module, tuple[int | None, int | None, int | None]]:
    model = _parse(path)
    _canonical_domain(model)
    size = path.stat().st_size
    _check_limits(model, path.name, size)
    opsets = _opsets(model, path.name)
    _check_io(model, path.name)
    _register_converters()
    _resolve_converters(model, opsets, path.name)
    import onnx
    try:
        onnx.checker.check_model(model)
    except Exception as exc:   # ValidationError, or the C++ checker's own errors
        raise CheckpointError(f"{path.name} is not a valid ONNX model: {_first_line(exc)}") from None
    from onnx2torch import convert
    _fold_identities_of_weights(model.graph)
    try:
        # A ModelProto under 2 GiB is shape-inferred in memory: onnx2torch writes no file and reads none.
        converted: nn.Module = convert(model)
    except UnsupportedOp as exc:
        raise CheckpointError(f"{path.name}: unsupported ONNX op: {exc}") from None
    except NotImplementedError as exc:   # an onnx2torch converter refusing an attribute value
        raise CheckpointError(f"{path.name}: unsupported ONNX op feature: {_first_line(exc)}") from None
    except Exception as exc:   # malformed shapes or values the checker does not see
        raise CheckpointError(f"{path.name} could not be converted: {_first_line(exc)}") from None
    for tensor in [*converted.parameters(), *converted.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise CheckpointError(f"{path.name} holds {tensor.dtype} weights; export the model in float32")
    batch = _fixed_batch(model)
    if batch is not None:
        # An exporter that was not told the batch is dynamic bakes the example's size into the graph
        # (dynamo: into every Reshape); other batch sizes would fail or, worse, mix images.
        converted = FixedBatch(converted, batch)
    return converted.eval(), _declared_shape(model)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def check_onnx_output(model: nn.Module, in_channels: int, size: int, num_classes: int) -> None:
    """Run a batch of 3 images (C, size, size) through a converted model: the output must be (3, num_classes).

    Three, because an exporter that baked the example batch size into a Reshape usually used 1 or 2
    (load_onnx runs graphs that declare a fixed batch size in chunks of it).
    """
    x = torch.rand(3, in_channels, size, size, generator=torch.Generator().manual_seed(0))
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    try:
        with torch.no_grad():
            out = model.eval()(x.to(device))
    except Exception as exc:   # any op failing on this input shape
        raise CheckpointError(f"the ONNX graph fails on a batch of 3 images of shape ({in_channels}, {size}, "
                              f"{size}): {_first_line(exc)}; check the input size and channels, or "
                              f"{DYNAMIC_BATCH_HINT}") from None
    if isinstance(out, (tuple, list)):
        raise CheckpointError(f"the ONNX graph returns {len(out)} outputs; robaudit needs one (N, classes) "
                              "logits tensor")
    if not isinstance(out, torch.Tensor):
        raise CheckpointError(f"the ONNX graph returns {type(out).__name__}, not a logits tensor")
    if tuple(out.shape) != (3, num_classes):
        raise CheckpointError(f"the ONNX graph's output for 3 images has shape {tuple(out.shape)}; expected "
                              f"(3, {num_classes}) logits (N, classes)")
    if not out.is_floating_point():
        raise CheckpointError(f"the ONNX graph's output has dtype {out.dtype}; expected float logits")
