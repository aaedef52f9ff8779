"""Triton python-backend model (not decoupled) for plain ``infer`` calls (gRPC ModelInfer, HTTP
/infer): forwards each request to the decoupled model named by the ``target_model`` parameter
through BLS and returns its single response, so there is one runtime and one capacity.

No head-of-line blocking: ``execute`` copies each request's inputs into a BLS request, hands it
to a worker thread and returns at once; the worker sends the one response (with the FINAL flag)
through the request's response sender when the target model has answered. So requests run
concurrently in the target's continuous batching instead of one ``execute`` batch at a time.
A request's response sender is used by exactly one worker and never after its final response.

Triton 2.51's BLS hands back an error's message but not its code; parameter errors (their
message starts with the input's name) are returned as INVALID_ARG again, the rest as INTERNAL.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

OUTPUTS = ["text_output", "output_ids"]
WORKERS = 64  # requests forwarded at once; more wait for a worker (the target queues them anyway)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.target = cfg["parameters"]["target_model"]["string_value"]
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="qwen35-bls")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                # copies: a request's input buffers are released when execute returns
                inputs = [pb_utils.Tensor(t.name(), np.array(t.as_numpy(), copy=True)) for t in request.inputs() if t.name() != "stream"]
                inputs.append(pb_utils.Tensor("stream", np.array([[False]], dtype=bool)))
                bls = pb_utils.InferenceRequest(model_name=self.target, inputs=inputs, requested_output_names=OUTPUTS)
            except Exception as e:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"reading the request failed: {e}", pb_utils.TritonError.INTERNAL)), flags=FINAL)
                continue
            self.pool.submit(self._forward, bls, sender)
        return None

    def _forward(self, bls, sender):
        try:
            response = self._run(bls)
        except Exception as e:  # BLS itself failed (target unloaded, server stopping)
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.target}: {e}", pb_utils.TritonError.UNAVAILABLE))
        try:
            sender.send(response, flags=FINAL)
        except Exception as e:  # the client is gone; nothing else holds this request
            pb_utils.Logger.log_warn(f"{self.target}_infer: sending a response failed: {e}")

    def _run(self, bls):
        from qwen35_trt.serving.contract import is_parameter_error

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
