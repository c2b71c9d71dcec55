"""Triton shell of the healthcheck model; the logic is dlstream.models.payloads.payload_lengths."""

import json

import triton_python_backend_utils as pb_utils

from dlstream.models.payloads import payload_lengths


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                payload = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                lengths = payload_lengths(payload).astype(self.output_dtype)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, lengths)]))
            except Exception as exc:  # one bad request gets its own error, the batch goes on
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
