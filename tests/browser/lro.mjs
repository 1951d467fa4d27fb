// Drives one asyncgate job with @azure/core-lro, as an Azure SDK for
// JavaScript client would: `node lro.mjs URL`.
//
// Prints `LOCATION <url>` once the job is accepted (so the test can act on
// it), then one JSON line: the result (`{"result": status, "body": ...}`) or
// the error the poller threw (`{"error": name, "code": ..., "message": ...}`).
import { createHttpPoller } from "@azure/core-lro";
import {
  createDefaultHttpClient,
  createHttpHeaders,
  createPipelineRequest,
} from "@azure/core-rest-pipeline";

const url = process.argv[2];
const http = createDefaultHttpClient();

function json(text) {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

async function send(method, target, body) {
  const request = createPipelineRequest({
    url: new URL(target, url).toString(),
    method,
    body,
    // Loopback HTTP in the tests; the SDKs refuse plain HTTP otherwise.
    allowInsecureConnection: true,
    headers: createHttpHeaders(body ? { "content-type": "application/json" } : {}),
  });
  const response = await http.sendRequest(request);
  const parsed = json(response.bodyAsText);
  return {
    flatResponse: { status: response.status, body: parsed ?? response.bodyAsText },
    rawResponse: {
      statusCode: response.status,
      headers: response.headers.toJSON(),
      request: { method, url: request.url },
      body: parsed,
    },
  };
}

const lro = {
  sendInitialRequest: async () => {
    const initial = await send("POST", url, JSON.stringify({ from: "core-lro" }));
    console.log("LOCATION", initial.rawResponse.headers["location"]);
    return initial;
  },
  sendPollRequest: (path) => send("GET", path),
};

let outcome;
try {
  const poller = createHttpPoller(lro, { intervalInMs: 50 });
  const done = await poller.pollUntilDone();
  outcome = { result: done.status, body: done.body };
} catch (e) {
  outcome = { error: e.name, code: e.code ?? null, message: e.message };
}
console.log(JSON.stringify(outcome));
