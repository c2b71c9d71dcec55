"""The ``model.py`` of every dlstream model: copied into each version folder by the build.

It only moves tensors between Triton and :mod:`pipelines.serving`; dtypes and names come from the config.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from pipelines.serving import load_runner, run_requests


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
        responses = []
        for result in run_requests(self.runner, payloads):
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
                continue
            tensors = [
                pb_utils.Tensor(name, array.astype(dtype))
                for (name, dtype), array in zip(self.outputs, result, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
