//! `/v1/tasks/{id}/checkpoint`: an attempt saves its checkpoint (the body,
//! raw bytes), anyone reads what the record names.

use super::{ApiError, ApiState};
use crate::tasks::parse_task_id;
use crate::tasks::view::CheckpointView;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shoal_protocol::tasks::checkpoint::MAX_CHECKPOINT_BYTES;

/// Query of `POST /v1/tasks/{id}/checkpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SaveQuery {
    /// The saving attempt (`$SHOAL_ATTEMPT`).
    attempt: u64,
}

pub(super) async fn save(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<SaveQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<(StatusCode, Json<CheckpointView>), ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text()))
            .with_field("attempt")
    })?;
    let task = parse_task_id(&id)?;
    let bytes = super::body::read_limited(req, "a checkpoint", MAX_CHECKPOINT_BYTES).await?;
    let meta = state
        .tasks
        .save_checkpoint(task, q.attempt, bytes.to_vec())
        .await?;
    Ok((StatusCode::CREATED, Json(CheckpointView::of(&meta))))
}

pub(super) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<CheckpointView>, ApiError> {
    let task = parse_task_id(&id)?;
    let read = state.tasks.get(task).await?;
    match &read.record.checkpoint {
        Some(meta) => Ok(Json(CheckpointView::of(meta))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("task {task} has no checkpoint"),
        )),
    }
}
