"""Triton python-backend model (not decoupled) for plain ``infer`` calls (gRPC ModelInfer, HTTP
/infer): forwards each request to the decoupled model named by the ``target_model`` parameter
through BLS and returns its single response, so there is one runtime and one capacity.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUTS = ["text_output", "output_ids"]


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.target = cfg["parameters"]["target_model"]["string_value"]
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="qwen35-bls")

    def execute(self, requests):
        return list(self.pool.map(self._forward, requests))

    def _forward(self, request):
        inputs = [t for t in request.inputs() if t.name() != "stream"]
        inputs.append(pb_utils.Tensor("stream", np.array([[False]], dtype=bool)))
        bls = pb_utils.InferenceRequest(model_name=self.target, inputs=inputs, requested_output_names=OUTPUTS)
        result = None
        for resp in bls.exec(decoupled=True):
            if resp.has_error():
                return pb_utils.InferenceResponse(error=resp.error())
            if resp.output_tensors():
                result = resp
        if result is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.target} returned no response (cancelled?)"))
        outs = [pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(result, name).as_numpy()) for name in OUTPUTS]
        return pb_utils.InferenceResponse(output_tensors=outs)

    def finalize(self):
        self.pool.shutdown(wait=True)
