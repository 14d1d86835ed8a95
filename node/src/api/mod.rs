//! The HTTP API (axum): members, this node, metrics, liveness and readiness,
//! and the web view's static files (`/ui`, see [`crate::ui`]).
//! It listens on loopback unless told otherwise; off loopback every request
//! but `/healthz`, `/readyz` and the web view's files needs
//! `Authorization: Bearer TOKEN`.

mod body;
pub mod checkpoint;
pub mod fed;
pub mod tasks;
pub mod view;

use crate::agent::driver::{Command, Snapshot};
use crate::health::HealthHandle;
use crate::metrics::{state_name, Metrics};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use shoal_protocol::gossip::Health;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use view::{CheckView, MemberView, NodeView};

/// How long a request waits for the membership driver.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Commands to the membership driver.
    pub commands: mpsc::Sender<Command>,
    /// Requests to the task host.
    pub tasks: crate::tasks::TasksHandle,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Health check results.
    pub health: HealthHandle,
    /// Bearer token required, if any.
    pub token: Option<String>,
    /// Started without seeds on purpose.
    pub single_node: bool,
    /// The party our certificate names.
    pub party: String,
    /// This node's id.
    pub me: shoal_protocol::NodeId,
    /// When the agent started.
    pub started: std::time::Instant,
    /// The federation link table, on a gateway.
    pub fed: Option<crate::federation::FedHandle>,
    /// This agent's tunnels to peer parties' services.
    pub tunnels: crate::federation::tunnel::Tunnels,
    /// Starts and cancels a drain of this node.
    pub drain: crate::agent::drain::DrainControl,
    /// What runs on this node, for the metrics.
    pub load: Arc<crate::tasks::host::TaskLoad>,
}

/// The router of the API.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/members", get(members))
        .route("/v1/node", get(node))
        .route("/metrics", get(metrics))
        .route("/v1/tasks", get(tasks::list).post(tasks::submit))
        .route("/v1/tasks/{id}", get(tasks::get_task))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/logs", get(tasks::logs))
        .route(
            "/v1/tasks/{id}/checkpoint",
            get(checkpoint::show).post(checkpoint::save),
        )
        .route("/v1/fed/links", get(fed::links))
        .route("/v1/fed/trust", get(fed::trusted).post(fed::trust))
        .route("/v1/fed/trust/{party}", axum::routing::delete(fed::untrust))
        .route("/v1/fed/exports", get(fed::exports).post(fed::export))
        .route("/v1/tunnels", get(fed::tunnels).post(fed::open_tunnel))
        .route(
            "/v1/tunnels/{port}",
            axum::routing::delete(fed::close_tunnel),
        )
        .route(
            "/v1/fed/exports/{party}/{service}",
            axum::routing::delete(fed::unexport),
        )
        .route("/v1/drain", post(drain))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .merge(crate::ui::router())
        .fallback(no_such_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts each answered request under its route's pattern; a method
/// outside the standard ones counts as `OTHER` so that no client can
/// grow the metric without bound.
async fn count_requests(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        .into_iter()
        .find(|m| *m == request.method().as_str())
        .unwrap_or("OTHER");
    let response = next.run(request).await;
    state
        .metrics
        .count_api_request(&route, method, response.status().as_u16());
    response
}

/// Compares without an early exit so timing does not reveal the prefix.
fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `host` (a `Host` header: name or address, any port) names this
/// machine's loopback: `localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                return inside
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.is_loopback());
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

/// Without a token the API trusts whoever reaches loopback; a web page
/// that rebinds its own name to 127.0.0.1 reaches it too, but its requests
/// carry that name in `Host`. So only loopback names are served then
/// (docs/security.md). A request without `Host` is no browser's.
fn refuse_foreign_host(request: &Request) -> Option<Response> {
    let host = request.headers().get(header::HOST)?;
    let host = host.to_str().unwrap_or("(not text)");
    if is_loopback_host(host) {
        return None;
    }
    let error = format!(
        "Host {host:?} is not a loopback name; without --api-token this API serves only \
         localhost, 127.0.0.0/8 and [::1] (a guard against DNS rebinding)"
    );
    Some(ApiError::new(StatusCode::FORBIDDEN, error).into_response())
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if state.token.is_none() {
        if let Some(refused) = refuse_foreign_host(&request) {
            return refused;
        }
    }
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| token_matches(g, expected)) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// An error answer: the status and a JSON body `{"error", "field"?,
/// "limit"?}`, the same shape for every error the API gives.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
    limit: Option<u64>,
}

impl ApiError {
    /// An error about the request as a whole.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
            limit: None,
        }
    }

    /// A 400 about one body field.
    pub fn field(field_error: crate::tasks::view::FieldError) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: field_error.to_string(),
            field: Some(field_error.field),
            limit: field_error.limit,
        }
    }

    /// Names the body field the error is about.
    pub fn with_field(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }

    /// Adds the bound the request passed.
    pub fn with_limit(mut self, limit: u64) -> ApiError {
        self.limit = Some(limit);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        if let Some(limit) = self.limit {
            body["limit"] = limit.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// Routes no handler serves: a JSON 404 naming the path.
async fn no_such_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such route: {} {} (the API is under /v1, see docs/operations.md)",
            request.method(),
            request.uri().path().escape_debug()
        ),
    )
}

/// A route served, but not for this method.
async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {}",
            request.uri().path().escape_debug(),
            request.method()
        ),
    )
}

async fn snapshot(state: &ApiState) -> Result<Snapshot, ApiError> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "membership driver is not running",
        )
    };
    state
        .commands
        .send(Command::Snapshot(tx))
        .await
        .map_err(|_| unavailable())?;
    match tokio::time::timeout(DRIVER_TIMEOUT, rx).await {
        Ok(Ok(snapshot)) => Ok(snapshot),
        _ => Err(unavailable()),
    }
}

fn self_view(snapshot: &Snapshot) -> MemberView {
    let identity = &snapshot.identity;
    let mut view = MemberView::base(
        &identity.name,
        &identity.id.to_hex(),
        &identity.addr.to_string(),
        shoal_protocol::membership::MemberState::Alive,
        snapshot.incarnation,
        snapshot.local_state.as_ref(),
    );
    view.is_self = true;
    view.last_heard_ms_ago = Some(0);
    view
}

/// Every member including this node, in id order.
pub fn member_views(snapshot: &Snapshot) -> Vec<MemberView> {
    let now_ms = snapshot.now.as_millis();
    let mut views: Vec<MemberView> = snapshot
        .members
        .iter()
        .map(|m| MemberView::from_member(m, now_ms))
        .collect();
    views.push(self_view(snapshot));
    views.sort_by(|a, b| a.id.cmp(&b.id));
    views
}

async fn members(State(state): State<ApiState>) -> Result<Json<Vec<MemberView>>, ApiError> {
    let snapshot = snapshot(&state).await?;
    Ok(Json(member_views(&snapshot)))
}

/// Why this node should get no traffic, if it should not: it has not
/// joined a mesh, or its own health is critical (it takes no new work).
fn not_ready_reason(state: &ApiState, snapshot: &Snapshot) -> Option<String> {
    if !(state.single_node || snapshot.joined) {
        return Some("not joined a mesh yet".into());
    }
    match state.health.node_health() {
        Health::Critical { reason } => Some(format!("health critical: {reason}")),
        Health::Passing | Health::Warning { .. } => None,
    }
}

async fn node(State(state): State<ApiState>) -> Result<Json<NodeView>, ApiError> {
    let snapshot = snapshot(&state).await?;
    let members_by_state: BTreeMap<String, usize> = snapshot
        .counts()
        .into_iter()
        .map(|(s, n)| (state_name(s).to_string(), n))
        .collect();
    let checks = state
        .health
        .checks()
        .into_iter()
        .map(|c| CheckView {
            name: c.name,
            kind: c.kind.to_string(),
            status: serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            output: c.output,
            consecutive_failures: c.consecutive_failures,
            last_run_ms_ago: c
                .last_run
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        })
        .collect();
    Ok(Json(NodeView {
        member: self_view(&snapshot),
        party: state.party.clone(),
        local_health: snapshot.local_health,
        ready: not_ready_reason(&state, &snapshot).is_none(),
        members_by_state,
        checks,
        uptime_s: state.started.elapsed().as_secs(),
        draining: state.drain.draining(),
        running_attempts: state.drain.running(),
    }))
}

/// `POST /v1/drain` body; every field optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// Milliseconds the running attempts get to finish before the agent
    /// leaves anyway.
    deadline_ms: Option<u64>,
    /// Cancel a drain under way instead.
    #[serde(default)]
    cancel: bool,
}

/// Starts (or cancels) a drain: the node takes no new work at once, and the
/// agent leaves once its attempts ended or the deadline passed.
async fn drain(
    State(state): State<ApiState>,
    body: Result<Option<Json<DrainBody>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body
        .map_err(|e| ApiError::new(e.status(), format!("body: {}", e.body_text())))?
        .map(|Json(b)| b)
        .unwrap_or_default();
    state
        .tasks
        .drain(!body.cancel)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if body.cancel {
        state.drain.cancel();
    } else {
        let deadline = body
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(crate::agent::drain::DEFAULT_DEADLINE);
        state.drain.start(deadline);
    }
    Ok(Json(serde_json::json!({
        "draining": state.drain.draining(),
        "running_attempts": state.drain.running(),
    })))
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    // Refresh the membership metrics from the machine before encoding.
    snapshot(&state).await?;
    let load = &state.load;
    state.metrics.observe_node(
        load.running.load(std::sync::atomic::Ordering::Relaxed),
        load.slots_free.load(std::sync::atomic::Ordering::Relaxed),
    );
    let body = state.metrics.encode();
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}

/// The federation links of this node; empty on a node that is no gateway.
async fn readyz(State(state): State<ApiState>) -> Response {
    match snapshot(&state).await {
        Ok(s) => match not_ready_reason(&state, &s) {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "ready": false, "reason": reason })),
            )
                .into_response(),
        },
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_count_as_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:7480",
            "LOCALHOST.:1",
            "127.0.0.1",
            "127.0.0.1:7480",
            "127.9.8.7:80",
            "[::1]",
            "[::1]:7480",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example:7480",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:7480",
            "10.0.0.1:7480",
            "[::2]:7480",
            "[::1]x",
            "localhost:",
            "localhost:99999",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("sec", "secret"));
        assert!(!token_matches("", "secret"));
    }
}
