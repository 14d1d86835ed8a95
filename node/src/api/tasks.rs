//! `/v1/tasks`: submit, read, list, cancel, logs.

use super::{ApiError, ApiState};
use crate::exec::LogStream;
use crate::tasks::view::{SubmitBody, TaskView, STATE_NAMES};
use crate::tasks::{parse_task_id, LogQuery, TaskError};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Longest submit body accepted.
const MAX_SUBMIT_BYTES: u64 = 1024 * 1024;
/// Default and largest page of `GET /v1/tasks`.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 10_000;
/// Response header: offset to ask for next.
pub const NEXT_OFFSET_HEADER: &str = "x-shoal-next-offset";
/// Response header: `true` once the log is complete.
pub const FINISHED_HEADER: &str = "x-shoal-finished";
/// Response header: the attempt the log belongs to.
pub const ATTEMPT_HEADER: &str = "x-shoal-attempt";

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let status = match &e {
            TaskError::Invalid(_) => StatusCode::BAD_REQUEST,
            TaskError::NotFound(_) => StatusCode::NOT_FOUND,
            TaskError::Conflict(_) => StatusCode::CONFLICT,
            TaskError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            TaskError::Unplaceable(unfit) => {
                let field = unfit.field();
                return ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {e}"))
                    .with_field(field);
            }
        };
        ApiError::new(status, e.to_string())
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A submit body whose every error is a 400 naming the field (axum's own
/// `Json` answers 422 for a wrong type and does not always name it).
pub struct SubmitJson(pub SubmitBody);

impl<S: Send + Sync> FromRequest<S> for SubmitJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(bad_request(
                "body: send JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = super::body::read_limited(req, "the submission", MAX_SUBMIT_BYTES).await?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let body: SubmitBody = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                // Missing or unknown fields name themselves in the message.
                bad_request(inner.to_string())
            } else {
                bad_request(format!("{path}: {inner}"))
            }
        })?;
        Ok(SubmitJson(body))
    }
}

pub(super) async fn submit(
    State(state): State<ApiState>,
    SubmitJson(body): SubmitJson,
) -> Result<Response, ApiError> {
    let force = body.force.unwrap_or(false);
    let spec = body.into_spec().map_err(ApiError::field)?;
    let warnings = crate::tasks::preflight::warnings(&spec);
    let id = state.tasks.submit(spec, force).await?;
    let mut answer = serde_json::json!({ "id": id.to_string() });
    if !warnings.is_empty() {
        answer["warnings"] = warnings.into();
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub(super) async fn get_task(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = parse_task_id(&id)?;
    let read = state.tasks.get(task).await?;
    Ok(Json(TaskView::of_read(&read)))
}

pub(super) async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = parse_task_id(&id)?;
    state.tasks.cancel(task).await?;
    let read = state.tasks.get(task).await?;
    Ok(Json(TaskView::of_read(&read)))
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(format!("query: {}", e.body_text())))?;
    if let Some(s) = &q.state {
        if !STATE_NAMES.contains(&s.as_str()) {
            return Err(bad_request(format!(
                "state: {s:?} is not one of {}",
                STATE_NAMES.join(", ")
            )));
        }
    }
    let limit = q.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(bad_request(format!(
            "limit: must be 1..={LIST_LIMIT_MAX}, got {limit}"
        )));
    }
    let reads = state.tasks.list(q.state, limit).await?;
    Ok(Json(reads.iter().map(TaskView::of_read).collect()))
}

/// Query of `GET /v1/tasks/{id}/logs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    stream: Option<LogStream>,
    offset: Option<u64>,
    attempt: Option<u64>,
}

pub(super) async fn logs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad_request(format!("query: {}", e.body_text())))?;
    let task = parse_task_id(&id)?;
    let piece = state
        .tasks
        .logs(
            task,
            LogQuery {
                stream: q.stream.unwrap_or(LogStream::Stdout),
                offset: q.offset.unwrap_or(0),
                attempt: q.attempt,
            },
        )
        .await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(NEXT_OFFSET_HEADER, HeaderValue::from(piece.next_offset));
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(piece.attempt));
    headers.insert(
        FINISHED_HEADER,
        HeaderValue::from_static(if piece.finished { "true" } else { "false" }),
    );
    Ok((headers, piece.data).into_response())
}
