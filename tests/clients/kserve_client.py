"""Run by tests/test_kserve_client.py with KServe's own Python SDK, in its own virtualenv
(.venv/clients: kserve's pins clash with ours). Prints one JSON object: what the SDK saw.

    .venv/clients/bin/python tests/clients/kserve_client.py BASE_URL MODEL INSTANCES_JSON
"""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(base_url: str, model: str, instances: list) -> dict:
    batch = np.array(instances, dtype=np.float32)
    seen = {}
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        seen["server_live"] = await v2.is_server_live(base_url)
        seen["server_ready"] = await v2.is_server_ready(base_url)
        seen["model_ready"] = await v2.is_model_ready(base_url, model)
        for binary in (False, True):
            tensor = InferInput(name="image", shape=list(batch.shape), datatype="FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            response = await v2.infer(base_url, InferRequest(model, [tensor], request_id="k-1"), model_name=model)
            output = response.outputs[0]
            seen["binary" if binary else "json"] = {"name": output.name, "shape": list(output.shape),
                                                  "datatype": output.datatype, "id": response.id,
                                                  "values": output.as_numpy().tolist()}
    finally:
        await v2.close()
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=30))
    try:
        seen["v1"] = await v1.infer(base_url, {"instances": instances}, model_name=model)
    finally:
        await v1.close()
    return seen


if __name__ == "__main__":
    url, name, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(asyncio.run(main(url, name, data))))
