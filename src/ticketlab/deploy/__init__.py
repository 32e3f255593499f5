"""Deploy a ticket where it runs faster: compact and sparse exports, verified, and measured.

PyTorch multiplies pruned zeros like any other weight, so a masked network is exactly as slow
as the dense one. Two exports make the pruning pay:

- `compact`: whole filters or neurons removed become physically smaller dense layers
  (Torch-Pruning follows the dependencies through batch norm, residual additions and the
  next layers' inputs; optional extra `ticketlab[deploy]`);
- `sparse`: an unstructured ticket's layers keep only their kept weights (CSR where a stated
  rule says it is faster, dense elsewhere);
- `onnx`: the compact model, checked with onnxruntime.

Every export is verified against the masked model on real inputs before it is written.
"""
