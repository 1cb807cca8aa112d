"""Batching shared by tritonops' Python-based fallback backends (onnxruntime, pytorch).

The server launcher copies this file next to each backend's model.py, which loads it by path:
the backends run inside the Python backend stub, without tritonops installed there."""

import numpy as np


def pad_value(arr):
    if arr.dtype == np.object_:
        return b""
    return False if arr.dtype == np.bool_ else 0


def batch_groups(feeds, pad_ragged):
    """Requests that can run as one call: equal non-batch shapes and dtypes per input, or, when
    padding, equal ranks and dtypes (a request of another rank gets its own call and its own error)."""
    groups = {}
    for i, feed in feeds:
        if pad_ragged:
            key = tuple((k, v.ndim, v.dtype.str) for k, v in sorted(feed.items()))
        else:
            key = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(feed.items()))
        groups.setdefault(key, []).append((i, feed))
    return list(groups.values())


def concatenate(group, pad_ragged):
    """One batch from a group of requests; with padding, variable dims are right-padded to the
    largest request's. Returns the batch, each request's batch size and its own input shapes."""
    names = list(group[0][1])
    sizes = [int(next(iter(feed.values())).shape[0]) if feed else 1 for _, feed in group]
    shapes = [{n: feed[n].shape for n in names} for _, feed in group]
    batch = {}
    for name in names:
        arrays = [feed[name] for _, feed in group]
        if pad_ragged and len({a.shape[1:] for a in arrays}) > 1:
            target = [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
            arrays = [np.pad(a, [(0, 0)] + [(0, t - s) for s, t in zip(a.shape[1:], target)],
                             constant_values=pad_value(a)) for a in arrays]
        batch[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return batch, sizes, shapes


def split(outputs, sizes, shapes, batch, variable_dims):
    """Each request's slice of the batch outputs; padded variable dims are cut back to its length."""
    results = []
    offset = 0
    for size, own in zip(sizes, shapes):
        part = {}
        for name, value in outputs.items():
            v = value[offset:offset + size]
            if own is not None:
                v = unpad(v, own, batch, variable_dims.get(name))
            part[name] = v
        results.append(part)
        offset += size
    return results


def unpad(out, own_shapes, batch, variable):
    """Cut an output dim back to the request's own length when it is variable in the config
    (``-1``; ``variable`` None means unknown: any dim) and has the padded length of an input dim
    at the same position that this request had shorter ([batch, seq, ...] sequence models)."""
    index = [slice(None)]
    changed = False
    for d in range(1, out.ndim):
        cut = None
        if variable is None or (d - 1 < len(variable) and variable[d - 1]):
            for name, own in own_shapes.items():
                if d < len(own) and batch[name].shape[d] == out.shape[d] and own[d] < out.shape[d]:
                    cut = own[d]
                    break
        index.append(slice(0, cut))
        changed = changed or cut is not None
    return out[tuple(index)] if changed else out
