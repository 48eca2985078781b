//! The HTTP/1.1 side: routing, the checks Mesos makes on headers and bodies, and responses.

use crate::events;
use crate::legacy;
use crate::operator;
use crate::scheduler::{Refusal, Schedulers};
use crate::serve::{Body, ChannelBody};
use crate::wire;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;

/// The largest request body read (a Mesos call; an ACCEPT of many tasks stays far below).
pub const MAX_BODY: usize = 8 << 20;
const STREAM_ID: &str = "Mesos-Stream-Id";

/// What the request handlers share.
pub struct Shared {
    pub schedulers: Arc<Schedulers>,
    /// The identity the legacy read endpoints use; `None`: they answer 501.
    pub operator: Option<framework::ClientOptions>,
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = normalize(req.uri().path()).to_owned();
    let method = req.method().clone();
    let resp = match path.as_str() {
        "/version" if method == Method::GET => json_response(200, &version()),
        "/api/v1/scheduler" if method == Method::POST => match scheduler(&shared, req).await {
            Ok(r) => r,
            Err(refusal) => {
                tracing::debug!(status = refusal.status, message = %refusal.message, "scheduler call refused");
                text(refusal.status, &refusal.message)
            }
        },
        "/state" | "/state.json" | "/slaves" | "/frameworks" | "/tasks"
            if method == Method::GET =>
        {
            match legacy_read(&shared, &path, req.uri().query()).await {
                Ok(v) => json_response(200, &v),
                Err(refusal) => text(refusal.status, &refusal.message),
            }
        }
        "/api/v1" if method == Method::POST => match operator_api(&shared, req).await {
            Ok(r) => r,
            Err(refusal) => text(refusal.status, &refusal.message),
        },
        "/health" if method == Method::GET => empty(200),
        "/redirect" if method == Method::GET => {
            // This gateway is the leader its clients see: Location names itself.
            let mut r = empty(307);
            let pid = shared.schedulers.master_info["pid"].as_str().unwrap_or("");
            let addr = pid.split_once('@').map(|(_, a)| a).unwrap_or("");
            if let Ok(v) = HeaderValue::from_str(&format!("//{addr}")) {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            r
        }
        "/version" | "/api/v1/scheduler" | "/api/v1" => text(
            405,
            &format!(
                "Expecting {} for {path}, not {method}",
                if path == "/version" { "GET" } else { "POST" }
            ),
        ),
        _ => text(
            404,
            &format!("No endpoint {path} on the Corral Mesos gateway"),
        ),
    };
    Ok(resp)
}

/// The cluster as Corral's leader sees it, read with the operator identity.
async fn read_state(shared: &Shared, what: &str) -> Result<Box<proto::ClusterState>, Refusal> {
    let Some(opts) = &shared.operator else {
        return Err(Refusal::new(
            501,
            format!(
                "{what} needs an operator identity: start the gateway with --operator-cert and \
                 --operator-key"
            ),
        ));
    };
    match framework::operator_call(opts, proto::OperatorCall::GetState).await {
        Ok(proto::OperatorReply::State(s)) => Ok(s),
        Ok(other) => Err(Refusal::new(
            503,
            format!("unexpected answer to GetState from the Corral master: {other:?}"),
        )),
        Err(e) => Err(Refusal::new(
            503,
            format!("cannot read the cluster state from the Corral masters: {e}"),
        )),
    }
}

/// A legacy GET.
async fn legacy_read(
    shared: &Shared,
    path: &str,
    query: Option<&str>,
) -> Result<serde_json::Value, Refusal> {
    let tasks_query = if path == "/tasks" {
        Some(legacy::TaskQuery::parse(query).map_err(|e| Refusal::new(400, e))?)
    } else {
        None
    };
    let state = read_state(shared, path).await?;
    Ok(match (path, tasks_query) {
        ("/slaves", _) => legacy::slaves(&state),
        ("/frameworks", _) => legacy::frameworks(&state),
        (_, Some(q)) => legacy::tasks(&state, &q),
        _ => legacy::state(&state, &shared.schedulers.master_info),
    })
}

/// `POST /api/v1`: the v1 operator calls the gateway answers.
async fn operator_api(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let (_, body) = json_body(req).await?;
    #[derive(serde::Deserialize)]
    struct OperatorCall {
        #[serde(rename = "type", default)]
        kind: Option<String>,
    }
    let call: OperatorCall = serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(400, format!("Failed to parse the body into a Call: {e}")))?;
    let kind = call
        .kind
        .ok_or_else(|| Refusal::new(400, "Expecting 'type' to be present"))?;
    let state = if operator::needs_state(&kind).map_err(|e| Refusal::new(400, e))? {
        Some(read_state(shared, &kind).await?)
    } else {
        None
    };
    Ok(json_response(
        200,
        &operator::respond(&kind, state.as_deref()),
    ))
}

/// Checks `Content-Type: application/json` as Mesos does and reads the body (bounded).
async fn json_body(
    req: Request<Incoming>,
) -> Result<(hyper::http::request::Parts, Bytes), Refusal> {
    match req.headers().get(CONTENT_TYPE).map(media_type) {
        None => {
            return Err(Refusal::new(400, "Expecting 'Content-Type' to be present"));
        }
        Some(t) if t == "application/json" => {}
        Some(t) => {
            return Err(Refusal::new(
                415,
                format!(
                    "Unsupported 'Content-Type' {t:?}: the Corral gateway speaks \
                     application/json only"
                ),
            ))
        }
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::new(
                413,
                format!("Request body larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                400,
                format!("Failed to read the request body: {e}"),
            ))
        }
    };
    Ok((parts, body))
}

/// Mesos's paths: the master is libprocess's delegate, so `/master/X` is `/X`; a trailing `/`
/// is dropped.
fn normalize(path: &str) -> &str {
    let p = path
        .strip_prefix("/master")
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or(path);
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

fn version() -> serde_json::Value {
    serde_json::json!({
        "version": events::MESOS_VERSION,
        "git_tag": events::MESOS_VERSION,
        "build_user": "corral",
        "build_date": "",
        "build_time": 0,
        "corral_version": env!("CARGO_PKG_VERSION"),
    })
}

async fn scheduler(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let (parts, body) = json_body(req).await?;
    let accepts_json = parts
        .headers
        .get(ACCEPT)
        .map(|a| {
            a.to_str()
                .unwrap_or("")
                .split(',')
                .map(|p| p.split(';').next().unwrap_or("").trim())
                .any(|m| matches!(m, "application/json" | "application/*" | "*/*"))
        })
        .unwrap_or(true);
    let stream_id = parts
        .headers
        .get(STREAM_ID)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let call: wire::Call = serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(400, format!("Failed to parse the body into a Call: {e}")))?;
    let kind = call
        .kind
        .clone()
        .ok_or_else(|| Refusal::new(400, "Expecting 'type' to be present"))?;
    if kind == "UPDATE_FRAMEWORK" {
        shared
            .schedulers
            .update_framework(&call, stream_id.as_deref())
            .await?;
        return Ok(empty(200));
    }
    if kind != "SUBSCRIBE" {
        shared.schedulers.call(&kind, &call, stream_id.as_deref())?;
        return Ok(empty(202));
    }
    if stream_id.is_some() {
        return Err(Refusal::new(
            400,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        ));
    }
    if !accepts_json {
        return Err(Refusal::new(
            406,
            "Expecting 'Accept' to allow application/json",
        ));
    }
    let stream = shared.schedulers.subscribe(&call).await?;
    let mut resp = Response::new(ChannelBody(stream.records).boxed());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Chunked even when the request said `Connection: close` (pymesos does, and needs chunks).
    h.insert(
        hyper::header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    if let Ok(v) = HeaderValue::from_str(&stream.stream_id) {
        h.insert(STREAM_ID, v);
    }
    Ok(resp)
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(v: &HeaderValue) -> String {
    v.to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn empty(code: u16) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status(code);
    r
}

pub fn text(code: u16, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(message.to_owned())).boxed());
    *r.status_mut() = status(code);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn json_response(code: u16, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(events::ascii_json(v))).boxed());
    *r.status_mut() = status(code);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn master_prefix_and_trailing_slash() {
        assert_eq!(normalize("/master/api/v1/scheduler"), "/api/v1/scheduler");
        assert_eq!(normalize("/api/v1/scheduler/"), "/api/v1/scheduler");
        assert_eq!(normalize("/master/frameworks/"), "/frameworks");
        assert_eq!(normalize("/masterx"), "/masterx");
        assert_eq!(normalize("/"), "/");
    }
}
