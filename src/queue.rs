//! The operators' view of the job queue: `GET /v1/queue` (counts by kind and state, the age of
//! the oldest due job, dead jobs) and `POST /v1/queue/jobs/{id}/replay` for a dead job.
//!
//! The queue is shared by every tenant, so these routes are for the operator: an admin key of
//! the default tenant (in single-tenant mode, any admin key).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::{AuthProblems, Error, NotFoundProblem, Result};
use crate::http::extract::Path;
use crate::keys::Principal;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(queue_stats))
        .routes(routes!(replay_job))
}

/// Jobs of one kind on one queue.
#[derive(Serialize, ToSchema)]
pub struct KindCounts {
    pub queue: String,
    pub kind: String,
    pub available: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    /// Milliseconds the oldest due, unclaimed job has waited (0 when none waits).
    pub oldest_available_age_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct QueueStats {
    pub kinds: Vec<KindCounts>,
    /// Dead jobs across all kinds: they wait for a replay.
    pub dead: i64,
}

/// Job queue counts by kind and state (operator).
#[utoipa::path(get, path = "/v1/queue", tag = "operations",
    responses(
        (status = 200, body = QueueStats),
        AuthProblems,
    ))]
async fn queue_stats(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<QueueStats>> {
    principal.require_operator(state.config.tenancy)?;
    let stats = state.queue.stats().await.map_err(anyhow::Error::from)?;
    Ok(axum::Json(QueueStats {
        dead: stats.dead(),
        kinds: stats
            .kinds
            .into_iter()
            .map(|k| KindCounts {
                queue: k.queue,
                kind: k.kind,
                available: k.available,
                running: k.running,
                done: k.done,
                dead: k.dead,
                oldest_available_age_ms: k.oldest_available_age_ms,
            })
            .collect(),
    }))
}

/// Replay a dead job with a fresh set of attempts (operator).
#[utoipa::path(post, path = "/v1/queue/jobs/{id}/replay", tag = "operations",
    params(("id" = String, Path, description = "Job id, `job_...`")),
    responses(
        (status = 202, description = "The job is due again"),
        AuthProblems,
        NotFoundProblem,
    ))]
async fn replay_job(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    principal.require_operator(state.config.tenancy)?;
    if !state.queue.replay(&id).await.map_err(anyhow::Error::from)? {
        return Err(Error::not_found("dead job"));
    }
    tracing::info!(job = %id, "dead job replayed");
    Ok(StatusCode::ACCEPTED)
}
