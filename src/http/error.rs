//! The one error type of the HTTP API, answered as RFC 9457 problem+json.
//!
//! Every problem carries a stable machine `code` that clients branch on; `title` and `detail` are
//! for people and may change. A 500 never carries internals: the cause is logged with the request
//! id and the client gets a generic problem.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem type: `urn:switchyard:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `forbidden_scope`, `validation_failed`.
    pub code: String,
    /// Per-field messages for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &str,
        detail: Option<String>,
        errors: Vec<FieldError>,
    ) -> Self {
        Problem {
            type_: format!("urn:switchyard:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            errors,
        }
    }
}

/// The OpenAPI answers every route behind an API key can give: 401 and 403.
#[derive(utoipa::IntoResponses)]
pub enum AuthProblems {
    #[response(
        status = 401,
        description = "No valid API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "The key lacks the scope",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
}

/// The OpenAPI answer of a route whose object does not exist.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No such object for this tenant",
    content_type = "application/problem+json"
)]
pub struct NotFoundProblem(pub Problem);

/// The OpenAPI answer of a route given invalid fields.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 422,
    description = "Invalid fields, listed in `errors`",
    content_type = "application/problem+json"
)]
pub struct InvalidProblem(pub Problem);

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a valid API key is required")]
    Unauthorized,
    #[error("this API key has been revoked")]
    RevokedKey,
    #[error("this key lacks the `{0}` scope")]
    ForbiddenScope(&'static str),
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// Well-formed JSON of the wrong shape: a missing field or a value of the wrong type.
    #[error("{0}")]
    InvalidBody(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("unsupported media type: send application/json")]
    UnsupportedMediaType,
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("the database is not reachable")]
    Unavailable,
    /// A service this request needed (Stripe) refused it or could not be reached: 502.
    #[error("{detail}")]
    Upstream { code: &'static str, detail: String },
    /// A service this request needed could not be reached at all: 503.
    #[error("{detail}")]
    Unreachable { code: &'static str, detail: String },
    /// A service's error status, passed on as it is (a proxied call).
    #[error("{detail}")]
    Passed {
        status: u16,
        code: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(what: &str) -> Self {
        Self::NotFound {
            code: "not_found",
            detail: format!("{what} not found"),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::RevokedKey => (StatusCode::UNAUTHORIZED, "key_revoked"),
            Self::ForbiddenScope(_) => (StatusCode::FORBIDDEN, "forbidden_scope"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Upstream { code, .. } => (StatusCode::BAD_GATEWAY, code),
            Self::Unreachable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Passed { status, code, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Builds a problem response; also used by the fallbacks and the panic handler.
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: Option<String>,
    errors: Vec<FieldError>,
) -> Response {
    problem_response(status, Problem::new(status, code, detail, errors))
}

fn problem_response(status: StatusCode, body: Problem) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl Error {
    /// The problem document this error answers with (an internal cause is logged, not told).
    pub fn into_problem(self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation(errors) => errors,
            _ => Vec::new(),
        };
        Problem::new(status, code, Some(detail), errors)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let body = self.into_problem();
        let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = problem_response(status, body);
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::InvalidBody(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest {
                code: "malformed_json",
                detail: e.body_text(),
            },
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::InvalidBody(other.body_text()),
        }
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest {
            code: "invalid_query",
            detail: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest {
            code: "invalid_path",
            detail: rejection.body_text(),
        }
    }
}
