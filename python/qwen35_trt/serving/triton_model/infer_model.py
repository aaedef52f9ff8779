"""Triton python-backend model (not decoupled) for plain ``infer`` calls (gRPC ModelInfer, HTTP
/infer): forwards each request to the decoupled model named by the ``target_model`` parameter
through BLS and returns its single response, so there is one runtime and one capacity.

No head-of-line blocking: ``publish`` gives this model as many instances as the runtime has
sequence slots (``instance_group``), without dynamic batching, so each ``execute`` call carries one
request and plain infer requests run concurrently in the target's continuous batching, each
answered as soon as it is done. (Answering later through the request's response sender from a
worker thread, which python backend >= 24.06 allows in non-decoupled models, corrupted the stub's
heap under load in Triton 2.51: "double free or corruption" after ~7000 requests.)

Triton 2.51's BLS hands back an error's message but not its code; parameter errors (their
message starts with the input's name) are returned as INVALID_ARG again, the rest as INTERNAL.
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
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="qwen35-bls")  # only if Triton ever batches requests

    def execute(self, requests):
        if len(requests) == 1:
            return [self._forward(requests[0])]
        return list(self.pool.map(self._forward, requests))

    def _forward(self, request):
        try:
            return self._run(request)
        except Exception as e:  # BLS itself failed (target unloaded, server stopping)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.target}: {e}", pb_utils.TritonError.UNAVAILABLE))

    def _run(self, request):
        from qwen35_trt.serving.contract import is_parameter_error

        inputs = [t for t in request.inputs() if t.name() != "stream"]
        inputs.append(pb_utils.Tensor("stream", np.array([[False]], dtype=bool)))
        bls = pb_utils.InferenceRequest(model_name=self.target, inputs=inputs, requested_output_names=OUTPUTS)
        result = None
        for resp in bls.exec(decoupled=True):
            if resp.has_error():
                message = resp.error().message()
                code = pb_utils.TritonError.INVALID_ARG if is_parameter_error(message) else pb_utils.TritonError.INTERNAL
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
            if resp.output_tensors():
                result = resp
        if result is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.target} returned no response (cancelled?)", pb_utils.TritonError.INTERNAL))
        outs = [pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(result, name).as_numpy()) for name in OUTPUTS]
        return pb_utils.InferenceResponse(output_tensors=outs)

    def finalize(self):
        self.pool.shutdown(wait=True)
