"""Find layers, name endpoints and expose intermediate tensors of Keras 3 models.

This module replaces ``keras_explainable.inspection`` for Keras 3. Everything here is a pure
function of the model it is given (no global state, no monkey-patching of ``layer.call``).

Endpoint descriptors
--------------------
An *endpoint* is one tensor of a model's graph: the output (or an input) of one call of one
layer. It is described by any of

* an ``int``: an index into the top-level ``model.layers`` (negative indices count from the end;
  for a functional model ``model.layers[0]`` is its ``InputLayer``);
* a ``str``: a layer name. A name inside a nested sub-model is written ``"outer/inner"`` (Keras 3
  forbids ``/`` in layer names, so this is unambiguous); a bare inner name is accepted too when
  exactly one layer of the nested sub-models has it;
* a ``keras.Layer`` object of the model;
* a ``tuple`` path into nested models: ``("resnet", "conv2_block1_out")`` is the layer
  ``"conv2_block1_out"`` inside the sub-model layer ``"resnet"`` (items are names, ``int``
  indices into that level's ``layers``, or layer objects);
* a ``dict`` ``{"name" | "layer": <any of the above>, "link": "output" | "input",
  "call": int, "index": int}``: ``link`` defaults to ``"output"``; ``call`` picks one call of
  a layer that is called several times (a shared layer) and is required for such a layer;
  ``index`` picks one tensor when the layer has several inputs (``link="input"``, e.g. ``Add``)
  or several outputs, and defaults to 0, the first;
* an ``Endpoint`` returned by ``resolve``.

Calls are numbered in the order the model was built (the order of the layer's inbound nodes).
For a layer inside a sub-model that is itself called ``m`` times, the call of the inner layer
numbered ``j`` during outer call ``i`` is ``i * n + j``, where ``n`` is how many times the inner
graph calls the layer.
"""

from __future__ import annotations

from .biases import biases
from .endpoints import Endpoint, default_endpoints, descriptor_list, resolve
from .layers import (
    find_layer,
    find_layers,
    last_pooling_layer,
    layer_names,
    load_model,
    logits_layer,
)
from .summary import structure
from .surgery import expose, rewire

__all__ = [
    "Endpoint",
    "biases",
    "default_endpoints",
    "descriptor_list",
    "expose",
    "find_layer",
    "find_layers",
    "last_pooling_layer",
    "layer_names",
    "load_model",
    "logits_layer",
    "resolve",
    "rewire",
    "structure",
]
