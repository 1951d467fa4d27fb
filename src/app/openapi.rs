//! `GET {jobs_path}/openapi.json`: the job API described as OpenAPI 3.1,
//! built from the configured `jobs_path` and the problem types the gateway
//! answers with, so the document names the paths a client really uses.

use serde_json::{json, Value};

/// The problem types a job endpoint may answer with, by status.
const NOT_FOUND: &[&str] = &["job-not-found"];
const GONE: &[&str] = &["job-gone"];
const STORE: &[&str] = &["store-unavailable"];

/// The document for job resources under `jobs_path`.
pub(super) fn document(jobs_path: &str) -> Value {
    let id = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The job's id, as the 202's Location gave it.",
        "schema": { "type": "string" }
    });
    let wait = json!({
        "name": "wait", "in": "query", "required": false,
        "description": "Long-poll: answer as soon as the status changes, or after this many seconds (at most 30).",
        "schema": { "type": "integer", "minimum": 0 }
    });
    let redirect = json!({
        "name": "redirect", "in": "query", "required": false,
        "description": "false: never answer 303, even on a redirect_when_done route. A 202's Operation-Location on such a route carries it, for LRO clients that take a redirect from their monitor as an error.",
        "schema": { "type": "string", "enum": ["true", "false"] }
    });
    let retry_after = json!({
        "description": "Seconds to wait before asking again, while the job is queued or running.",
        "schema": { "type": "integer", "minimum": 0 }
    });
    let not_found = problem(
        "Unknown or malformed id, or a job bound to other credentials.",
        NOT_FOUND,
    );
    let gone = problem("Expired or deleted; its tombstone is still kept.", GONE);
    let unavailable = problem("The job store cannot be read.", STORE);
    let result_answers = json!({
        "200": { "description": "The backend's own response, replayed: its status (any), headers and body." },
        "409": problem("Not finished yet, or canceled; `job_status` and `monitor` say which and where to wait.", &["job-not-finished", "job-canceled"]),
        "502": problem("Failed without a backend response.", &["upstream-unreachable", "upstream-reset", "result-too-large", "interrupted", "job-lost", "upstream-broken-framing", "upstream-certificate"]),
        "504": problem("The backend did not answer within the upstream's job_timeout.", &["upstream-timeout"]),
        "404": not_found,
        "410": gone,
        "503": problem("The job store cannot be read, or the job failed waiting longer than its route's start_timeout, never sent.", &["store-unavailable", "expired"]),
        "default": { "description": "Any other status is the backend's, replayed." }
    });
    let mut poll_answers = result_answers.clone();
    poll_answers["200"]["headers"] = json!({
        "AsyncResult": {
            "description": "OData 4.01: the final answer's status code.",
            "schema": { "type": "integer" }
        }
    });
    poll_answers["202"] = json!({
        "description": "Not finished yet.",
        "headers": { "Retry-After": retry_after },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } }
    });
    poll_answers["303"] = json!({
        "description": "Finished, on a route with redirect_when_done: Location is the result.",
        "headers": { "Location": { "schema": { "type": "string" } } }
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "asyncgate job API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The resources of jobs accepted by asyncgate's async routes: a request on such a route is answered 202 Accepted with Location (and Operation-Location) pointing here."
        },
        "paths": {
            format!("{jobs_path}/{{id}}"): {
                "parameters": [id],
                "get": {
                    "summary": "The job's status document; a long-poll with ?wait=N; Server-Sent Events with Accept: text/event-stream (id: and event: per change, Last-Event-ID resumes, 204 once the end was seen); WebSocket events with Upgrade: websocket.",
                    "operationId": "getJob",
                    "parameters": [wait, redirect],
                    "responses": {
                        "200": {
                            "description": "The job document (or, for text/event-stream, one event per change).",
                            "headers": { "Retry-After": retry_after },
                            "content": {
                                "application/json": { "schema": { "$ref": "#/components/schemas/Job" } },
                                "text/event-stream": { "schema": { "type": "string" } }
                            }
                        },
                        "101": { "description": "Upgrade: websocket (RFC 6455): the job document as a text message at each state change, then a normal close after the end." },
                        "303": {
                            "description": "Finished (in any final state), on a route with redirect_when_done, unless ?redirect=false: Location is the result.",
                            "headers": { "Location": { "schema": { "type": "string" } } }
                        },
                        "400": problem("`wait` is not a whole number of seconds, `redirect` is neither true nor false, or a WebSocket handshake lacks a version-13 key.", &["bad-wait", "bad-redirect", "bad-websocket"]),
                        "404": not_found,
                        "410": gone,
                        "503": unavailable
                    }
                },
                "delete": {
                    "summary": "Cancel a queued or running job, or delete a finished job's result.",
                    "operationId": "cancelJob",
                    "responses": {
                        "200": {
                            "description": "Canceled (also when repeated): the job document.",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } }
                        },
                        "204": { "description": "The finished job's result is deleted (also when repeated)." },
                        "404": not_found,
                        "410": gone,
                        "503": unavailable
                    }
                }
            },
            format!("{jobs_path}/{{id}}/result"): {
                "parameters": [id],
                "get": {
                    "summary": "The backend's response, once the job has finished.",
                    "operationId": "getJobResult",
                    "responses": result_answers
                }
            },
            format!("{jobs_path}/{{id}}/poll"): {
                "parameters": [id],
                "get": {
                    "summary": "The poll dialect (OData, ARM, azure-core's Location poller): 202 until the job finishes, then what the result answers.",
                    "operationId": "pollJob",
                    "responses": poll_answers
                }
            }
        },
        "components": {
            "schemas": {
                "Job": job_schema(),
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "job_status": { "type": "string" },
                        "monitor": { "type": "string" }
                    }
                }
            }
        }
    })
}

/// A problem answer whose `type` is one of `kinds`.
fn problem(description: &str, kinds: &[&str]) -> Value {
    let types: Vec<String> = kinds
        .iter()
        .map(|k| format!("urn:asyncgate:problem:{k}"))
        .collect();
    json!({
        "description": format!("{description} Problem types: {}.", types.join(", ")),
        "content": {
            "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
        }
    })
}

fn job_schema() -> Value {
    let time = json!({ "type": "string", "format": "date-time" });
    json!({
        "type": "object",
        "required": ["id", "status", "route", "method", "created_at", "attempts", "priority", "links"],
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "status": { "enum": ["queued", "running", "succeeded", "failed", "canceled"] },
            "route": { "type": "string" },
            "method": { "type": "string" },
            "created_at": time,
            "started_at": time,
            "finished_at": time,
            "attempts": { "type": "integer", "minimum": 0 },
            "priority": { "type": "integer", "minimum": 0, "maximum": 7, "description": "RFC 9218 urgency: among the upstream's waiting jobs, 0 starts first" },
            "progress": {
                "type": "object",
                "properties": { "percent": { "type": "integer" }, "estimated": { "type": "boolean" } }
            },
            "response": {
                "type": "object",
                "properties": { "status": { "type": "integer" }, "bytes": { "type": "integer" } }
            },
            "error": {
                "type": "object",
                "description": "RFC 9457's type, title and detail; code (the problem's kind) and message (its detail) for Azure-style LRO clients.",
                "properties": {
                    "type": { "type": "string" }, "title": { "type": "string" }, "detail": { "type": "string" },
                    "code": { "type": "string" }, "message": { "type": "string" }
                }
            },
            "retry": {
                "type": "object",
                "properties": { "next_attempt_at": time, "reason": { "type": "string" } }
            },
            "webhook": { "type": "object" },
            "kafka": {
                "type": "object",
                "description": "The job's Kafka record, for a route with a kafka_topic: its topic and how producing it goes.",
                "properties": {
                    "topic": { "type": "string" },
                    "state": { "type": "string", "enum": ["pending", "delivered", "failed"] },
                    "attempts": { "type": "integer" },
                    "last_error": { "type": "string" },
                    "next_attempt_at": time
                }
            },
            "resourceLocation": { "type": "string" },
            "links": {
                "type": "object",
                "required": ["self", "result", "cancel"],
                "properties": {
                    "self": { "type": "string" }, "result": { "type": "string" }, "cancel": { "type": "string" }
                }
            }
        }
    })
}
