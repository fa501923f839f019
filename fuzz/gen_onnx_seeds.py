"""Tiny single-op ONNX models whose constant operands (pads, axes, shapes,
repeats, depth) are initializers, so kiln can compile them: fuzz seeds for
ops the ONNX backend node tests only give with runtime operands.
Usage: python fuzz/gen_onnx_seeds.py OUT_DIR (needs the onnx and numpy packages)"""
import os, sys
import onnx, numpy as np
out = sys.argv[1]
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
def model(name, op, x_shape, out_shape, consts, attrs=None, x_type=TP.FLOAT, out_type=TP.FLOAT):
    inits = [nh.from_array(np.array(v[1], dtype=v[2]), v[0]) for v in consts]
    ins = ["x"] + [c[0] if c[0] else "" for c in consts]
    node = h.make_node(op, ins, ["y"], **(attrs or {}))
    g = h.make_graph([node], name, [h.make_tensor_value_info("x", x_type, x_shape)],
                     [h.make_tensor_value_info("y", out_type, out_shape)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)]); m.ir_version = 8
    onnx.save(m, os.path.join(out, f"gen_{name}.onnx"))
model("pad", "Pad", [1,3,4], [1,3,6], [("pads", [0,0,1,0,0,1], np.int64)], {"mode": "reflect"})
model("slice", "Slice", [3,8], [3,3], [("starts",[1],np.int64),("ends",[7],np.int64),("axes",[1],np.int64),("steps",[2],np.int64)])
model("expand", "Expand", [3,1], [2,3,4], [("shape",[2,3,4],np.int64)])
model("tile", "Tile", [2,3], [4,9], [("repeats",[2,3],np.int64)])
model("onehot", "OneHot", [4], [4,5], [("depth",[5],np.int64),("values",[0.0,1.0],np.float32)], x_type=TP.INT64)
model("reducesum", "ReduceSum", [2,3,4], [2,1,4], [("axes",[1],np.int64)], {"keepdims":1})
model("reducemax", "ReduceMax", [2,3,4], [2,3], [("axes",[-1],np.int64)], {"keepdims":0})
model("cumsum", "CumSum", [2,5], [2,5], [("axis",0,np.int32)], {"reverse":1})
model("layernorm", "LayerNormalization", [2,6], [2,6], [("scale",np.ones(6),np.float32),("bias",np.zeros(6),np.float32)], {"axis":-1})
model("reshape", "Reshape", [2,3,4], [6,4], [("shape",[-1,4],np.int64)])
model("unsqueeze", "Unsqueeze", [3,4], [1,3,4], [("axes",[0],np.int64)])
model("pad_const", "Pad", [2,5], [4,9], [("pads",[1,2,1,2],np.int64),("cv",1.5,np.float32)], {"mode":"constant"})
