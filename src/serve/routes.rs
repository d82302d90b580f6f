//! The HTTP routes of the Open Inference Protocol v2, matched by hand ([`Route::parse`]), and
//! [`handle`], which answers one request and logs it (method, path, model, status, latency).
//!
//! Inference runs on the runtime's worker thread that received the request: it is CPU work of
//! tens of microseconds for table models, and there are as many workers as sessions per model.
//! Parsing, inference and encoding run inside `catch_unwind`, so even a bug answers 500 instead
//! of dropping the connection.

use super::bundle::Bundle;
use super::error::ServeError;
use super::memory;
use super::protocol::{InferRequest, InferResponse};
use super::registry::Catalog;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The header of Triton's binary-data extension: the length of the body's JSON part.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// What every connection shares.
pub(crate) struct State {
    /// Replaced whole by the registry poller; requests clone the `Arc` and never hold the lock.
    pub catalog: RwLock<Arc<Catalog>>,
    pub max_body: usize,
}

impl State {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Metadata,
    Ready,
    Infer,
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Server,
    Live,
    Ready,
    Model {
        name: &'a str,
        version: Option<u64>,
        action: Action,
    },
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Result<Route<'a>, ServeError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let action = |rest: &[&str]| match rest {
            [] => Some(Action::Metadata),
            ["ready"] => Some(Action::Ready),
            ["infer"] => Some(Action::Infer),
            _ => None,
        };
        let route = match parts.as_slice() {
            ["v2"] => Some(Route::Server),
            ["v2", "health", "live"] => Some(Route::Live),
            ["v2", "health", "ready"] => Some(Route::Ready),
            ["v2", "models", name, "versions", v, rest @ ..] => {
                let version = v.parse::<u64>().map_err(|_| {
                    ServeError::not_found(format!("version `{v}` is not a version number"))
                })?;
                action(rest).map(|action| Route::Model {
                    name,
                    version: Some(version),
                    action,
                })
            }
            ["v2", "models", name, rest @ ..] => action(rest).map(|action| Route::Model {
                name,
                version: None,
                action,
            }),
            _ => None,
        };
        route.ok_or_else(|| ServeError::not_found(format!("no route `{path}`")))
    }
}

/// Answers one request and logs it.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Reply>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (model, result) = answer(&state, req, &method, &path).await;
    let response = result.unwrap_or_else(|e| {
        reply(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            "application/json",
            e.body(),
            None,
        )
    });
    tracing::info!(
        method = %method,
        path = %path,
        model = model.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}

/// A response body. One that answers a large request gives memory back when it is dropped:
/// then, not earlier, every buffer of the request is free (the body itself is the last).
pub(crate) struct Reply {
    inner: Full<Bytes>,
    trim: bool,
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.trim {
            memory::give_back();
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    header_len: Option<usize>,
) -> Response<Reply> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if let Some(n) = header_len {
        builder = builder.header(HEADER_LENGTH, n);
    }
    builder
        .body(Reply {
            inner: Full::new(Bytes::from(body)),
            trim: false,
        })
        .expect("static headers are valid")
}

fn ok_json(value: serde_json::Value) -> Response<Reply> {
    let body = serde_json::to_vec(&value).expect("JSON values serialize");
    reply(StatusCode::OK, "application/json", body, None)
}

fn status_only(status: StatusCode) -> Response<Reply> {
    reply(status, "application/json", Vec::new(), None)
}

type Answer = Result<Response<Reply>, ServeError>;

/// The model name (for the log) and the response.
async fn answer(
    state: &State,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> (Option<String>, Answer) {
    let route = match Route::parse(path) {
        Ok(r) => r,
        Err(e) => return (None, Err(e)),
    };
    let wanted = match route {
        Route::Model {
            action: Action::Infer,
            ..
        } => Method::POST,
        _ => Method::GET,
    };
    let model = match &route {
        Route::Model { name, .. } => Some(name.to_string()),
        _ => None,
    };
    if *method != wanted {
        let e = ServeError {
            status: 405,
            message: format!("`{path}` takes {wanted}, not {method}"),
        };
        return (model, Err(e));
    }
    let catalog = state.catalog();
    let result = match route {
        Route::Server => Ok(ok_json(json!({
            "name": "sluice",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": ["binary_tensor_data"],
        }))),
        Route::Live => Ok(status_only(StatusCode::OK)),
        Route::Ready => Ok(status_only(if catalog.models.is_empty() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        })),
        Route::Model {
            name,
            version,
            action,
        } => match catalog.get(name, version) {
            None => Err(unknown(&catalog, name, version)),
            Some((versions, bundle)) => match action {
                Action::Ready => Ok(status_only(StatusCode::OK)),
                Action::Metadata => {
                    let list: Vec<u64> = versions.by_number.keys().copied().collect();
                    Ok(ok_json(bundle.metadata(&list)))
                }
                Action::Infer => match read_body(state, req).await {
                    Err(e) => Err(e),
                    Ok((body, header_len)) => {
                        let size = body.len();
                        let bundle = bundle.clone();
                        let answer =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                                infer(&bundle, body, header_len)
                            }))
                            .unwrap_or_else(|_| {
                                Err(ServeError::internal(
                                    "the request hit a bug in sluice serve (see the server's log)",
                                ))
                            });
                        let large = size >= memory::LARGE_BODY;
                        if large && answer.is_err() {
                            // Every buffer of the request is already free.
                            memory::give_back();
                        }
                        answer.map(|r| {
                            r.map(|mut body| {
                                body.trim = large;
                                body
                            })
                        })
                    }
                },
            },
        },
    };
    (model, result)
}

/// Decodes, runs and encodes one infer request. Each form of the request is dropped as soon
/// as the next exists: the body once it is decoded, the tensors once they are features (in
/// [`Bundle::infer`]).
fn infer(bundle: &Bundle, body: Vec<u8>, header_len: Option<usize>) -> Answer {
    let mut request = InferRequest::parse(&body, header_len)?;
    drop(body);
    let inputs = std::mem::take(&mut request.inputs);
    let outputs = bundle.infer(inputs)?;
    let encoded = InferResponse {
        model: &bundle.name,
        version: bundle.version,
        id: request.id.as_deref(),
        outputs,
    }
    .encode(&request)?;
    let content_type = if encoded.header_len.is_some() {
        "application/octet-stream"
    } else {
        "application/json"
    };
    Ok(reply(
        StatusCode::OK,
        content_type,
        encoded.body,
        encoded.header_len,
    ))
}

fn unknown(catalog: &Catalog, name: &str, version: Option<u64>) -> ServeError {
    match (catalog.models.get(name), version) {
        (Some(v), Some(n)) => {
            let list: Vec<String> = v.by_number.keys().map(u64::to_string).collect();
            ServeError::not_found(format!(
                "model `{name}` has no version {n}; it has: {}",
                list.join(", ")
            ))
        }
        _ => {
            let names: Vec<&str> = catalog.models.keys().map(String::as_str).collect();
            ServeError::not_found(format!(
                "unknown model `{name}`; this server has: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// The body, within the size limit, and the binary extension's JSON length.
async fn read_body(
    state: &State,
    req: Request<Incoming>,
) -> Result<(Vec<u8>, Option<usize>), ServeError> {
    let too_large = || ServeError {
        status: 413,
        message: format!(
            "the request body is larger than the limit of {} bytes (`--max-body`)",
            state.max_body
        ),
    };
    let header_len = match req.headers().get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ServeError::bad_request(format!("`{HEADER_LENGTH}` must be a byte count"))
                })?,
        ),
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return Err(too_large());
    }
    // One buffer of the declared size, filled frame by frame: collecting the frames and then
    // joining them would hold the body twice.
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut incoming = Limited::new(req.into_body(), state.max_body);
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large()
            } else {
                ServeError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        if let Ok(data) = frame.into_data() {
            body.extend_from_slice(&data);
        }
    }
    Ok((body, header_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(Route::parse("/v2/health/live").unwrap(), Route::Live);
        assert_eq!(
            Route::parse("/v2/models/iris/versions/3/infer").unwrap(),
            Route::Model {
                name: "iris",
                version: Some(3),
                action: Action::Infer
            }
        );
        assert_eq!(
            Route::parse("/v2/models/iris").unwrap(),
            Route::Model {
                name: "iris",
                version: None,
                action: Action::Metadata
            }
        );
        assert_eq!(
            Route::parse("/v2/models/iris/versions/x/ready")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(Route::parse("/v1/models").unwrap_err().status, 404);
    }
}
