//! `POST /v1/events` and `POST /v1/events/batch` (`events:write`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::{AuthProblems, Error, InvalidProblem, NotFoundProblem, Problem, Result};
use crate::http::extract::Json;
use crate::keys::{Principal, Scope};

use super::{await_named_clicks, take, EventResult, NewEvent, Taken};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_event))
        .routes(routes!(post_batch))
}

/// Events in one batch at most.
const MAX_BATCH: usize = 500;

/// Send a conversion event (`events:write`): attributed to a partner's click and earning its
/// commission, or, for a refund, reversing its order's commissions. 201 the first time, 200 with
/// the same answer for a repeat of its `event_id`.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = NewEvent,
    responses(
        (status = 201, body = EventResult, description = "Taken"),
        (status = 200, body = EventResult, description = "A repeat of an event taken before"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "`event_id_conflict`: the id was used with a different body"),
        AuthProblems,
        NotFoundProblem,
        InvalidProblem,
    ))]
async fn post_event(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<EventResult>)> {
    principal.require(Scope::EventsWrite)?;
    await_named_clicks(&state, std::slice::from_ref(&body)).await;
    Ok(match take(&state, &principal.tenant_id, body).await? {
        Taken::New(result) => (StatusCode::CREATED, axum::Json(result)),
        Taken::Repeat(result) => (StatusCode::OK, axum::Json(result)),
    })
}

#[derive(Deserialize, ToSchema)]
pub struct Batch {
    /// 1 to 500 events.
    #[schema(value_type = Vec<NewEvent>)]
    pub events: Vec<Value>,
}

/// The answer to one event of a batch: what `POST /v1/events` would have answered.
#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    /// Its position in the batch, from 0.
    pub index: usize,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<EventResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResults {
    pub results: Vec<BatchItem>,
}

/// Send up to 500 events (`events:write`). Each is taken on its own, as by `POST /v1/events`:
/// one bad event does not sink the others, and each gets its own status and answer.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body = Batch,
    responses(
        (status = 200, body = BatchResults),
        AuthProblems,
        InvalidProblem,
    ))]
async fn post_batch(
    State(state): State<AppState>,
    principal: Principal,
    Json(batch): Json<Batch>,
) -> Result<axum::Json<BatchResults>> {
    principal.require(Scope::EventsWrite)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(Error::invalid("events", "must hold 1 to 500 events"));
    }
    await_named_clicks(&state, &batch.events).await;
    let mut results = Vec::with_capacity(batch.events.len());
    for (index, event) in batch.events.into_iter().enumerate() {
        let item = match take(&state, &principal.tenant_id, event).await {
            Ok(Taken::New(result)) => BatchItem {
                index,
                status: 201,
                result: Some(result),
                problem: None,
            },
            Ok(Taken::Repeat(result)) => BatchItem {
                index,
                status: 200,
                result: Some(result),
                problem: None,
            },
            Err(err) => {
                let problem = err.into_problem();
                BatchItem {
                    index,
                    status: problem.status,
                    result: None,
                    problem: Some(problem),
                }
            }
        };
        results.push(item);
    }
    Ok(axum::Json(BatchResults { results }))
}
