"""The ``model.py`` of every dlstream model: copied into each version folder by the build.

It only moves tensors between Triton and :mod:`dlstream.models.serving`; dtypes and names come from the
config.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from dlstream.models.postprocess import BAD_OUTPUT_PREFIX, OutputShapeError
from dlstream.models.serving import load_runner, run_named


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
            results = run_named(self.runner, payloads)
        except OutputShapeError as exc:
            # Final for these payloads (the model's output is wrong, not the payload): the worker
            # dead-letters them with reason bad-model-output.
            error = pb_utils.TritonError(f"{BAD_OUTPUT_PREFIX}{exc}", pb_utils.TritonError.INVALID_ARG)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
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
            tensors = [pb_utils.Tensor(name, result[name].astype(dtype)) for name, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
