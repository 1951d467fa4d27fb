//! What a webhook carries of its job's result, on a route with
//! `webhook_result = "inline"`: the backend's response itself in
//! `data.result` (`status`, `headers`, and `body` as text when it is
//! textual and UTF-8, else `body_base64`) up to `webhook_result_max`
//! bytes; above that, or when the result is already gone, `data.result_url`,
//! a signed link that works without the caller's credentials until it
//! expires. Never a truncated body.

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use serde_json::{json, Map, Value};

use super::id::JobId;
use super::model::Replay;
use super::store::{JobStore, Lookup};
use crate::body::ReplayBody;

/// The envelope `envelope` (the job's document in it) with its result, or
/// the link to it.
pub(super) async fn with_result(
    envelope: Vec<u8>,
    store: &dyn JobStore,
    id: JobId,
    max: u64,
    link: String,
) -> Bytes {
    let Ok(mut payload) = serde_json::from_slice::<Value>(&envelope) else {
        return Bytes::from(envelope);
    };
    let replay = match store.result(id).await {
        Ok(Lookup::Found((_, Some(replay)))) => Some(replay),
        _ => None,
    };
    let inline = match replay {
        Some(replay) => carried(replay, max).await,
        None => None,
    };
    if let Some(data) = payload.get_mut("data").and_then(Value::as_object_mut) {
        match inline {
            Some(result) => data.insert("result".into(), result),
            None => data.insert("result_url".into(), Value::String(link)),
        };
    }
    Bytes::from(serde_json::to_vec(&payload).expect("JSON values serialize"))
}

/// The result as a webhook carries it, if it is at most `max` bytes.
async fn carried(replay: Replay, max: u64) -> Option<Value> {
    let body = match replay.body {
        ReplayBody::Bytes(bytes) if bytes.len() as u64 <= max => bytes,
        ReplayBody::File(mut file, len) if len <= max => {
            let read = tokio::task::spawn_blocking(move || {
                let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.read_to_end(&mut body).map(|_| body)
            });
            Bytes::from(read.await.ok()?.ok()?)
        }
        _ => return None,
    };
    let headers = replay.headers.unpack();
    let mut shown = Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match shown.get_mut(name.as_str()) {
            // Repeated fields are one, comma-separated (RFC 9110, 5.3).
            Some(Value::String(before)) => {
                before.push_str(", ");
                before.push_str(&value);
            }
            _ => {
                shown.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let textual = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_textual);
    let mut result = json!({ "status": replay.status.as_u16(), "headers": shown });
    match std::str::from_utf8(&body) {
        Ok(text) if textual => result["body"] = Value::String(text.to_owned()),
        _ => result["body_base64"] = Value::String(STANDARD.encode(&body)),
    }
    Some(result)
}

/// Text, JSON and XML media types, which a receiver reads as text.
fn is_textual(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("/json")
        || essence.ends_with("+json")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || essence == "application/x-www-form-urlencoded"
        || essence == "application/javascript"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_xml_are_textual_the_rest_is_not() {
        for t in [
            "text/csv",
            "application/json; charset=utf-8",
            "application/problem+json",
            "application/xml",
            "image/svg+xml",
        ] {
            assert!(is_textual(t), "{t}");
        }
        for t in [
            "application/octet-stream",
            "image/png",
            "application/pdf",
            "",
        ] {
            assert!(!is_textual(t), "{t}");
        }
    }
}
