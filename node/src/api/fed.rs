//! `/v1/fed/*`: the link table, the party's trusted cards and its exported
//! services (both replicated record sets, docs/federation.md).

use super::{ApiError, ApiState};
use crate::federation::tunnel::{TunnelError, TunnelView};
use crate::federation::{Card, LinkView};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_protocol::federation::records::{
    valid_service_name, ExportRecord, RecordEdit, RecordSet, EXPORTS_REGISTER, MAX_SERVICE_NAME,
    TRUST_REGISTER,
};

/// `GET /v1/fed/links`.
pub async fn links(State(state): State<ApiState>) -> Json<Vec<LinkView>> {
    Json(state.fed.as_ref().map(|f| f.links()).unwrap_or_default())
}

/// The trusted cards in a record set; a record that is no card is skipped
/// with a log line (it cannot be written through this API).
pub fn cards_of(set: &RecordSet) -> Vec<Card> {
    set.records
        .iter()
        .filter_map(|(party, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            match Card::parse(&text, std::path::Path::new("the trust register")) {
                Ok(card) => Some(card),
                Err(e) => {
                    tracing::warn!(party = ?party, error = %e, "a trust record is not a card");
                    None
                }
            }
        })
        .collect()
}

/// The exports in a record set, skipping undecodable ones.
pub fn exports_of(set: &RecordSet) -> Vec<ExportRecord> {
    set.records
        .values()
        .filter_map(|bytes| ExportRecord::decode(bytes).ok())
        .collect()
}

/// `GET /v1/fed/trust`: the trusted cards.
pub async fn trusted(State(state): State<ApiState>) -> Result<Json<Vec<Card>>, ApiError> {
    let set = state.tasks.read_records(TRUST_REGISTER).await?;
    Ok(Json(cards_of(&set)))
}

/// `POST /v1/fed/trust` with a card's TOML as the body: trusts that party
/// (or replaces its card).
pub async fn trust(State(state): State<ApiState>, body: String) -> Result<Json<Card>, ApiError> {
    let card = Card::parse(&body, std::path::Path::new("the request body"))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if card.party == state.party {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the card is party {:?}'s own; a party trusts other parties' cards",
                card.party
            ),
        ));
    }
    state
        .tasks
        .edit_records(
            TRUST_REGISTER,
            RecordEdit::Put {
                name: card.party.clone(),
                value: card.to_toml().into_bytes(),
            },
        )
        .await?;
    tracing::info!(party = ?card.party, "party trusted");
    Ok(Json(card))
}

/// What an untrust or unexport removed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    /// Whether there was such a record.
    pub removed: bool,
}

/// `DELETE /v1/fed/trust/{party}`: trusts that party no more; the
/// gateways drop its links.
pub async fn untrust(
    State(state): State<ApiState>,
    Path(party): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    let before = state.tasks.read_records(TRUST_REGISTER).await?;
    state
        .tasks
        .edit_records(
            TRUST_REGISTER,
            RecordEdit::Remove {
                name: party.clone(),
            },
        )
        .await?;
    tracing::info!(party = ?party, "party untrusted");
    Ok(Json(Removed {
        removed: before.records.contains_key(&party),
    }))
}

/// `POST /v1/fed/exports` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// The service's name.
    pub service: String,
    /// Its port on this node's loopback.
    pub port: u16,
    /// The party it is exported to.
    pub to: String,
}

/// One exported service as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportView {
    /// The service's name.
    pub service: String,
    /// The party it is exported to.
    pub to: String,
    /// The id of the node it runs on.
    pub node: String,
    /// Its port on that node's loopback.
    pub port: u16,
}

impl From<&ExportRecord> for ExportView {
    fn from(e: &ExportRecord) -> Self {
        ExportView {
            service: e.service.clone(),
            to: e.to.clone(),
            node: e.node.to_hex(),
            port: e.port,
        }
    }
}

/// `GET /v1/fed/exports`.
pub async fn exports(State(state): State<ApiState>) -> Result<Json<Vec<ExportView>>, ApiError> {
    let set = state.tasks.read_records(EXPORTS_REGISTER).await?;
    Ok(Json(
        exports_of(&set).iter().map(ExportView::from).collect(),
    ))
}

fn bad_field(field: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message).with_field(field)
}

/// A 400 naming the `service` field unless `service` is a usable name.
fn check_service(service: &str) -> Result<(), ApiError> {
    if valid_service_name(service) {
        return Ok(());
    }
    Err(bad_field(
        "service",
        format!("service {service:?}: want 1 to {MAX_SERVICE_NAME} of A-Z a-z 0-9 . _ -"),
    ))
}

/// `POST /v1/fed/exports`: exports the service at `127.0.0.1:PORT` on this
/// node to one trusted party.
pub async fn export(
    State(state): State<ApiState>,
    body: Result<Json<ExportBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ExportView>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    check_service(&body.service)?;
    if body.port == 0 {
        return Err(bad_field("port", "port 0: want 1 to 65535".into()));
    }
    let trusted = state.tasks.read_records(TRUST_REGISTER).await?;
    if !trusted.records.contains_key(&body.to) {
        return Err(bad_field(
            "to",
            format!(
                "party {:?} is not trusted; trust its card first (`shoal fed trust`)",
                body.to
            ),
        ));
    }
    let record = ExportRecord {
        service: body.service,
        to: body.to,
        node: state.me,
        port: body.port,
    };
    state
        .tasks
        .edit_records(EXPORTS_REGISTER, record.to_edit())
        .await?;
    tracing::info!(service = ?record.service, to = ?record.to, port = record.port, "service exported");
    Ok(Json(ExportView::from(&record)))
}

/// `DELETE /v1/fed/exports/{party}/{service}`.
pub async fn unexport(
    State(state): State<ApiState>,
    Path((party, service)): Path<(String, String)>,
) -> Result<Json<Removed>, ApiError> {
    let name = shoal_protocol::federation::records::export_name(&party, &service);
    let before = state.tasks.read_records(EXPORTS_REGISTER).await?;
    state
        .tasks
        .edit_records(EXPORTS_REGISTER, RecordEdit::Remove { name: name.clone() })
        .await?;
    Ok(Json(Removed {
        removed: before.records.contains_key(&name),
    }))
}

impl From<TunnelError> for ApiError {
    fn from(e: TunnelError) -> Self {
        let status = match &e {
            TunnelError::Refused(_) => StatusCode::FORBIDDEN,
            TunnelError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            TunnelError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `POST /v1/tunnels` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelBody {
    /// The peer party.
    pub party: String,
    /// Its exported service.
    pub service: String,
}

/// `GET /v1/tunnels`.
pub async fn tunnels(State(state): State<ApiState>) -> Json<Vec<TunnelView>> {
    Json(state.tunnels.list())
}

/// `POST /v1/tunnels`: checks the path to the service and opens a local
/// port that carries connections there.
pub async fn open_tunnel(
    State(state): State<ApiState>,
    body: Result<Json<TunnelBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TunnelView>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    check_service(&body.service)?;
    if body.party == state.party {
        return Err(bad_field(
            "party",
            format!(
                "party {:?} is this party; a tunnel goes to another party",
                body.party
            ),
        ));
    }
    Ok(Json(state.tunnels.open(&body.party, &body.service).await?))
}

/// `DELETE /v1/tunnels/{port}`.
pub async fn close_tunnel(
    State(state): State<ApiState>,
    Path(port): Path<u16>,
) -> Result<Json<TunnelView>, ApiError> {
    state.tunnels.close(port).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no tunnel listens on 127.0.0.1:{port} at this agent"),
        )
    })
}
