"""The ``model.py`` of every dlstream model: copied into each version folder by the build.

It only moves tensors between Triton and :mod:`dlstream.models.serving`; dtypes and names come from the
config.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from dlstream.models.serving import load_runner, run_requests


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        device = "cuda" if args["model_instance_kind"] == "GPU" else "cpu"
        if device == "cuda":
            device = f"cuda:{args['model_instance_device_id']}"
        self.runner = load_runner(version_dir, device)
        self.input_name = config["input"][0]["name"]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]
        ]

    def execute(self, requests):
        payloads = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            results = run_requests(self.runner, payloads)
        except Exception as exc:  # noqa: BLE001 - a model failure: every request must still get a response
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                # INVALID_ARG tells clients this payload will never succeed (dead-letter it), unlike
                # UNAVAILABLE or INTERNAL, which are worth retrying.
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            # The config lists the probabilities, then the embedding when the model has one.
            tensors = [
                pb_utils.Tensor(name, array.astype(dtype))
                for (name, dtype), array in zip(self.outputs, result, strict=False)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
