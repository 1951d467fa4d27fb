"""Drives one asyncgate job with azure-core's LRO poller, as an Azure SDK
client would: `python3 azure_core_poller.py URL [HOST]`.

Prints `LOCATION <url>` once the job is accepted (so the test can act on
it), then one JSON line: the result (`{"result": status, "body": text}`) or
the error azure-core raised (`{"error": class, "code": ..., "message": ...}`).
HOST, when given, is sent as the initial request's `Host`.
"""

import json
import sys

from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError
from azure.core.polling import LROPoller
from azure.core.polling.base_polling import LROBasePolling
from azure.core.rest import HttpRequest


def main() -> None:
    url = sys.argv[1]
    headers = {"Content-Type": "application/json"}
    if len(sys.argv) > 2:
        headers["Host"] = sys.argv[2]
    client = PipelineClient(base_url=url)
    request = HttpRequest("POST", url, headers=headers, content=b'{"from": "azure-core"}')
    initial = client._pipeline.run(request)  # the PipelineResponse LROPoller starts from
    print("LOCATION", initial.http_response.headers.get("Location"), flush=True)

    def deserialize(pipeline_response):
        response = pipeline_response.http_response
        return {"result": response.status_code, "body": response.text()}

    poller = LROPoller(client, initial, deserialize, LROBasePolling(timeout=0.05))
    try:
        outcome = poller.result(timeout=30)
    except HttpResponseError as e:
        outcome = {
            "error": type(e).__name__,
            "code": e.error.code if e.error else None,
            "message": e.error.message if e.error else str(e),
        }
    except Exception as e:  # noqa: BLE001 - what the poller raised is the answer
        outcome = {"error": type(e).__name__, "code": None, "message": str(e)}
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
