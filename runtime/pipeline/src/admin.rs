//! The admin API (`/admin/v1/...`): bearer tokens from `[admin] tokens` (stored as
//! sha256 digests), a role per token, and every route checked against the roles it
//! allows. Message content is masked unless the caller's role may see it, and every
//! unmasked view, replay, resolve and rollback goes to the audit log under
//! `token:NAME`. Nothing here logs message content.

// Handlers return an HTTP response either way; an early `Err(Response)` is the natural
// shape for "stop here with this answer", and it is not on a hot path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use plexus_config::Role;
use plexus_journal::{AuditEntry, ErrorFilter, MessageId};
use serde_json::{Value, json};

use crate::chain::{masked_delivery_error, masked_reason, masked_stage_detail};
use crate::engine::{Engine, ReplayOutcome, Shared};
use crate::error_groups::{GROUP_SCAN, group_errors};
use crate::sha256_hex;

/// Roles that may read interfaces, errors and (masked) messages.
const READERS: &[Role] = &[Role::Viewer, Role::Operator, Role::Deployer, Role::Admin];
/// Roles that may act on errors and see message content.
const OPERATORS: &[Role] = &[Role::Operator, Role::Deployer, Role::Admin];
/// Roles that may change what runs.
const DEPLOYERS: &[Role] = &[Role::Deployer, Role::Admin];
/// Roles that may read the audit log and change grants.
const AUDITORS: &[Role] = &[Role::Reviewer, Role::Admin];
/// Every role.
const EVERYONE: &[Role] = &[
    Role::Viewer,
    Role::Operator,
    Role::Deployer,
    Role::Reviewer,
    Role::Admin,
];

/// Every route, its method and the roles it allows: the table the role test walks.
pub const ROUTES: &[(&str, &str, &[Role])] = &[
    ("GET", "/admin/v1/interfaces", READERS),
    ("GET", "/admin/v1/errors", READERS),
    ("GET", "/admin/v1/messages/{id}", READERS),
    ("GET", "/admin/v1/messages/{id}?unmasked=true", OPERATORS),
    ("POST", "/admin/v1/messages/{id}/replay", OPERATORS),
    ("POST", "/admin/v1/messages/{id}/resolve", OPERATORS),
    ("POST", "/admin/v1/interfaces/{name}/rollback", DEPLOYERS),
    ("POST", "/admin/v1/interfaces/{name}/activate", DEPLOYERS),
    ("POST", "/admin/v1/interfaces/{name}/trial", OPERATORS),
    ("POST", "/admin/v1/interfaces/{name}/shadow", DEPLOYERS),
    ("GET", "/admin/v1/interfaces/{name}/shadow", READERS),
    (
        "GET",
        "/admin/v1/interfaces/{name}/shadow?unmasked=true",
        OPERATORS,
    ),
    ("DELETE", "/admin/v1/interfaces/{name}/shadow", DEPLOYERS),
    (
        "POST",
        "/admin/v1/interfaces/{name}/shadow/promote",
        DEPLOYERS,
    ),
    ("POST", "/admin/v1/plugins", DEPLOYERS),
    ("GET", "/admin/v1/plugins", READERS),
    ("GET", "/admin/v1/plugins/{sha256}", READERS),
    ("GET", "/admin/v1/grants/{plugin}", EVERYONE),
    ("PUT", "/admin/v1/grants/{plugin}", AUDITORS),
    ("GET", "/admin/v1/audit", AUDITORS),
    ("GET", "/admin/v1/audit/verify", AUDITORS),
];

#[derive(Clone)]
struct Admin {
    engine: Engine,
}

/// Who is calling.
struct Caller {
    name: String,
}

impl Caller {
    fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

/// The admin routes, to merge into the HTTP server's router.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    let state = Admin {
        engine: Engine::from_shared(shared.clone()),
    };
    Router::new()
        .route("/admin/v1/interfaces", get(interfaces))
        .route("/admin/v1/errors", get(errors))
        .route("/admin/v1/messages/{id}", get(message))
        .route("/admin/v1/messages/{id}/replay", post(replay))
        .route("/admin/v1/messages/{id}/resolve", post(resolve))
        .route("/admin/v1/interfaces/{name}/rollback", post(rollback))
        .route("/admin/v1/interfaces/{name}/activate", post(activate))
        .route("/admin/v1/interfaces/{name}/trial", post(trial))
        .route(
            "/admin/v1/interfaces/{name}/shadow",
            post(shadow_start).get(shadow_report).delete(shadow_stop),
        )
        .route(
            "/admin/v1/interfaces/{name}/shadow/promote",
            post(shadow_promote),
        )
        .route("/admin/v1/plugins/{sha256}", get(plugin))
        .route("/admin/v1/grants/{plugin}", get(grants).put(set_grants))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/audit/verify", get(audit_verify))
        // JSON bodies are small; only an upload carries a component (its route, added
        // after this layer, keeps the server's 16 MiB limit).
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .route("/admin/v1/plugins", post(upload).get(plugins))
        // Before any extractor: a request without a known token is answered 401 before
        // its body is read, its path parsed or its query decoded.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        // Outermost: what axum answers for us (a path that does not parse, a body that
        // is not JSON, one too large) is JSON too, as every other admin error is.
        .route_layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// A plain-text client error (axum's own rejections) as `{"error": ...}`.
async fn json_errors(response: Response) -> Response {
    // Plain text, or nothing at all (a 405 names the methods in `Allow` only).
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !response.status().is_client_error() || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    // axum's rejection texts are a line or two.
    let text = axum::body::to_bytes(body, 16 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = match text.trim() {
        _ if parts.status == StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the body is larger than this route takes ({} KiB for a JSON body, {} MiB for a plug-in upload)",
            MAX_JSON_BODY >> 10,
            crate::http::MAX_BODY >> 20
        ),
        "" if parts.status == StatusCode::METHOD_NOT_ALLOWED => format!(
            "this route takes only {}",
            parts
                .headers
                .get(axum::http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("other methods")
        ),
        "" => parts
            .status
            .canonical_reason()
            .unwrap_or("refused")
            .to_owned(),
        text => text.to_owned(),
    };
    let mut json = problem(parts.status, detail);
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().append(name.clone(), value.clone());
        }
    }
    json
}

/// Largest JSON body an admin route reads (notes, chains, message ids, grants).
const MAX_JSON_BODY: usize = 256 << 10;

/// Refuses a request without a known bearer token (401) before anything of it is read;
/// each route then checks the token's role.
async fn require_token(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let any_role = Role::ALL.map(|(_, role)| role);
    match authorize(&admin, request.headers(), &any_role) {
        Ok(_) => next.run(request).await,
        Err(refused) => {
            tracing::info!(
                path = %request.uri().path(),
                status = refused.status().as_u16(),
                "admin API request refused"
            );
            refused
        }
    }
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": detail.into() }))).into_response()
}

/// Checks the bearer token and the role: 401 without a known token, 403 with one whose
/// role is not in `allowed`.
fn authorize(admin: &Admin, headers: &HeaderMap, allowed: &[Role]) -> Result<Caller, Response> {
    let tokens = admin.engine.tokens();
    let unauthorized = || {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            if tokens.is_empty() {
                "this site has no admin tokens, so no request is allowed: make one with \
                 `plexus token new NAME --role ROLE`, add the [admin] line it prints to the \
                 site config and reload it (SIGHUP)"
            } else {
                "a valid bearer token is required (Authorization: Bearer TOKEN)"
            },
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let digest = sha256_hex(token.as_bytes());
    let known = tokens
        .iter()
        .find(|t| constant_time_eq(t.sha256.as_bytes(), digest.as_bytes()))
        .ok_or_else(unauthorized)?;
    if !allowed.contains(&known.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(problem(
            StatusCode::FORBIDDEN,
            format!(
                "token {} has role {}; this needs one of: {}",
                known.name,
                known.role.as_str(),
                names.join(", ")
            ),
        ));
    }
    Ok(Caller {
        name: known.name.to_string(),
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> plexus_journal::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(plexus_journal::Error::NotFound(id))) => {
            Err(problem(StatusCode::NOT_FOUND, format!("no message {id}")))
        }
        Ok(Err(plexus_journal::Error::NoOpenError(id))) => Err(problem(
            StatusCode::CONFLICT,
            format!("message {id} has no open error"),
        )),
        Ok(Err(e)) => Err(problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn interfaces(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&admin, &headers, READERS) {
        return r;
    }
    let list: Vec<Value> = admin
        .engine
        .config()
        .interfaces
        .keys()
        .filter_map(|name| {
            let chain = admin.engine.active_chain(name.as_str()).ok()?;
            Some(json!({
                "name": name.as_str(),
                "chain": chain.digests().iter().map(|(n, d)| json!({"plugin": n, "sha256": d})).collect::<Vec<_>>(),
            }))
        })
        .collect();
    axum::Json(json!({ "interfaces": list })).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ErrorsQuery {
    interface: Option<String>,
    kind: Option<String>,
    all: Option<bool>,
    limit: Option<usize>,
    group: Option<bool>,
}

/// One grouping at a time: it reads up to `GROUP_SCAN` error rows.
static GROUPING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

async fn errors(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(q): Query<ErrorsQuery>,
) -> Response {
    if let Err(r) = authorize(&admin, &headers, READERS) {
        return r;
    }
    let kind = match q.kind.as_deref() {
        None => None,
        Some(name) => match plexus_journal::ErrorKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == name)
        {
            Some(kind) => Some(kind),
            None => {
                let names: Vec<&str> = plexus_journal::ErrorKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                return problem(
                    StatusCode::BAD_REQUEST,
                    format!("unknown kind {name:?}; one of {}", names.join(", ")),
                );
            }
        },
    };
    let group = q.group.unwrap_or(false);
    if group && q.all.unwrap_or(false) {
        return problem(
            StatusCode::BAD_REQUEST,
            "group covers open errors only; leave out all=true".to_owned(),
        );
    }
    let journal = admin.engine.journal().clone();
    let interface = q.interface.clone();
    let filter = ErrorFilter {
        interface: q.interface,
        kind,
        include_resolved: q.all.unwrap_or(false),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    // Grouping reads every open error (up to GROUP_SCAN); `limit` counts groups then.
    let read = if group {
        GROUP_SCAN.saturating_add(1)
    } else {
        limit
    };
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let now = std::time::SystemTime::now();
    if group {
        let Ok(_one_at_a_time) = GROUPING.acquire().await else {
            return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
        };
        // Read and grouped off the async threads; only the groups come back.
        return match blocking(move || {
            let list = journal.list_errors(&filter, read)?;
            let stats = journal.error_stats(interface.as_deref())?;
            let scanned = list.len().min(GROUP_SCAN);
            let groups = group_errors(&list[..scanned]);
            Ok::<_, plexus_journal::Error>((groups, scanned, list.len() <= GROUP_SCAN, stats))
        })
        .await
        {
            Ok((groups, scanned, all_grouped, stats)) => axum::Json(json!({
                "open": stats.open,
                "oldest_open_ms": stats.oldest_open.map(ms),
                "resolved": stats.resolved,
                "corrected": stats.corrected,
                "groups_total": groups.len(),
                "errors_grouped": scanned,
                "all_grouped": all_grouped,
                "groups": groups.iter().take(limit).map(|g| {
                    let mut v = g.to_json();
                    v["age_s"] = json!(now.duration_since(g.oldest).map_or(0, |d| d.as_secs()));
                    v
                }).collect::<Vec<_>>(),
            }))
            .into_response(),
            Err(r) => r,
        };
    }
    match blocking(move || {
        let list = journal.list_errors(&filter, read)?;
        let stats = journal.error_stats(interface.as_deref())?;
        Ok::<_, plexus_journal::Error>((list, stats))
    })
    .await
    {
        Ok((list, stats)) => axum::Json(json!({
            "open": stats.open,
            "oldest_open_ms": stats.oldest_open.map(ms),
            "resolved": stats.resolved,
            "corrected": stats.corrected,
            "errors": list.iter().map(|e| json!({
                "id": e.message.0,
                "interface": e.interface,
                "control_id": e.control_id,
                "kind": e.kind.as_str(),
                "stage": e.stage,
                "path": e.path,
                // No unmasked form: a viewer reads this list.
                "reason": masked_reason(e.kind, &e.reason),
                "occurrences": e.occurrences,
                "replays": e.replays,
                "first_seen_ms": ms(e.first_seen),
                "last_seen_ms": ms(e.last_seen),
                "age_s": now.duration_since(e.first_seen).map_or(0, |d| d.as_secs()),
                "resolved": e.resolution.is_some(),
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
struct MessageQuery {
    unmasked: Option<bool>,
}

async fn message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<MessageQuery>,
) -> Response {
    let unmasked = q.unmasked.unwrap_or(false);
    let caller = match authorize(&admin, &headers, if unmasked { OPERATORS } else { READERS }) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let journal = admin.engine.journal().clone();
    let actor = caller.actor();
    let record = match blocking(move || {
        let record = journal.show(MessageId(id))?;
        if unmasked {
            journal.audit(AuditEntry {
                actor,
                action: "unmasked-view".to_owned(),
                subject: format!("message:{id}"),
                detail: "GET /admin/v1/messages".to_owned(),
            })?;
        }
        Ok(record)
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let m = &record.inbound;
    axum::Json(json!({
        "id": record.id.0,
        "interface": m.interface,
        "control_id": m.control_id,
        "message_type": m.message_type,
        "processed": record.processed,
        "duplicate_of": record.duplicate_of.map(|d| d.0),
        "raw": unmasked.then(|| String::from_utf8_lossy(&m.raw).into_owned()),
        // `run`: 1 on arrival, then one per replay (each runs the chain from stage 0).
        "stages": record.stages.iter().zip(crate::chain::stage_runs(&record.stages)).map(|(s, run)| json!({
            "run": run,
            "index": s.record.stage_index,
            "plugin": s.record.plugin,
            "sha256": s.record.plugin_sha256,
            "outcome": s.record.outcome.as_str(),
            // A failed stage's detail ends with the plug-in's own words: content.
            "detail": s.record.detail.as_deref().map(|d| if unmasked {
                d
            } else {
                masked_stage_detail(s.record.outcome, d)
            }),
            "edits": s.record.edits.iter().map(|e| if unmasked {
                json!({"path": e.path, "old": e.old, "new": e.new})
            } else {
                json!({"path": e.path})
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "deliveries": record.deliveries.iter().map(|d| json!({
            "destination": d.destination, "status": d.status.as_str(), "attempts": d.attempts,
            "last_error": d.last_error.as_deref().map(|t| if unmasked { t } else { masked_delivery_error(t) }),
            "possible_resend": d.possible_resend,
        })).collect::<Vec<_>>(),
        "errors": record.errors.iter().map(|e| json!({
            "kind": e.kind.as_str(), "stage": e.stage, "path": e.path,
            "reason": if unmasked { &e.reason } else { masked_reason(e.kind, &e.reason) },
            "resolved": e.resolution.as_ref().map(|r| r.note.clone()),
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// What a replay or resolve request says.
#[derive(Debug, Default)]
struct Noted {
    note: Option<String>,
    /// Act on every open error like the message's (`"like": true`: its group in
    /// `GET /admin/v1/errors?group=true`).
    like: bool,
    /// With `like`: only group members with a larger message id (`"after"`, the
    /// `next_after` of the previous answer).
    after: Option<i64>,
}

/// `{"note": "...", "like": true, "after": N}` from a request body, each part optional
/// (empty body: no note, one message).
fn noted(body: &Bytes) -> Result<Noted, Response> {
    if body.is_empty() {
        return Ok(Noted::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    let note = value
        .get("note")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|n| !n.trim().is_empty());
    // The note goes into the audit log for good: a sentence or two, not a document.
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            format!(
                "the note is longer than {MAX_NOTE} bytes; say what was done in a sentence or two"
            ),
        ));
    }
    let like = match value.get("like") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(like)) => *like,
        Some(_) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "\"like\" is true (every open error like this message's) or false",
            ));
        }
    };
    let after = match value.get("after") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(after) if like => Some(after),
            _ => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "\"after\" is a message id (the previous answer's next_after), with \"like\": true",
                ));
            }
        },
    };
    Ok(Noted { note, like, after })
}

/// Longest note a replay or resolve may carry.
const MAX_NOTE: usize = 4096;

async fn replay(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, OPERATORS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let noted = match noted(&body) {
        Ok(noted) => noted,
        Err(r) => return r,
    };
    let note = noted
        .note
        .unwrap_or_else(|| "replayed through the admin API".to_owned());
    if noted.like {
        return replay_like(&admin, MessageId(id), noted.after, &note, &caller.actor()).await;
    }
    match admin
        .engine
        .replay(MessageId(id), &note, &caller.actor())
        .await
    {
        Ok(outcome) => axum::Json(replay_json(outcome)).into_response(),
        Err(crate::OpError::Journal(plexus_journal::Error::NotFound(_))) => {
            problem(StatusCode::NOT_FOUND, format!("no message {id}"))
        }
        Err(e) => problem(StatusCode::CONFLICT, e.to_string()),
    }
}

fn replay_json(outcome: ReplayOutcome) -> Value {
    match outcome {
        ReplayOutcome::Requeued {
            destinations,
            already_delivered,
        } => {
            json!({"result": "requeued", "destinations": destinations, "already_delivered": already_delivered})
        }
        // The reason is the plug-in's words: content, shown unmasked only.
        ReplayOutcome::Filtered { reason } => json!({
            "result": "filtered",
            "reason": masked_stage_detail(plexus_journal::OutcomeKind::Filter, &reason),
        }),
        ReplayOutcome::FailedAgain(f) => json!({
            "result": "failed", "stage": f.stage, "kind": f.kind.as_str(), "reason": f.reason,
        }),
    }
}

/// The most messages one group replay or resolve acts on; the rest are left for the
/// next request (`remaining`, from `next_after`).
const GROUP_ACTION_MAX: usize = 1000;

/// How long a group replay starts new replays: well inside the HTTP server's 120 s
/// request deadline, which would otherwise cut a replay between its requeue and its
/// audit entry. What is left is reported as `remaining`.
const GROUP_ACTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// A group of open errors to act on: its description, its members with a message id
/// above `after`, in message order, and the model error that defines it.
struct Group {
    json: Value,
    model: plexus_journal::ErrorEntry,
    ids: Vec<MessageId>,
}

/// The open errors like message `like`'s with an id above `after`, in message order; or
/// the answer saying why not. Reads up to `GROUP_SCAN` error rows, so one at a time, as
/// `GET /admin/v1/errors?group=true` does.
async fn group_of(admin: &Admin, like: MessageId, after: Option<i64>) -> Result<Group, Response> {
    let Ok(_one_at_a_time) = GROUPING.acquire().await else {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".to_owned(),
        ));
    };
    let journal = admin.engine.journal().clone();
    let found = tokio::task::spawn_blocking(move || {
        crate::error_groups::open_errors_like(journal.as_ref(), like)
    })
    .await
    .map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (model, mut ids) = match found {
        Ok(found) => found,
        Err(e @ crate::error_groups::LikeError::NoOpenError(_)) => {
            return Err(problem(StatusCode::CONFLICT, e.to_string()));
        }
        Err(e @ crate::error_groups::LikeError::TooMany { .. }) => {
            return Err(problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()));
        }
        Err(e) => return Err(problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    };
    ids.sort();
    ids.retain(|id| after.is_none_or(|after| id.0 > after));
    let json = json!({
        "like": like.0,
        "interface": model.interface,
        "kind": model.kind.as_str(),
        "stage": model.stage,
        "reason": masked_reason(model.kind, &model.reason),
    });
    Ok(Group { json, model, ids })
}

/// A group action's answer: `answer` with where it stopped (the members left, by message
/// id, and the cursor to go on from, if any are, after the first `done` of `ids`); 503
/// with what was done when a failure (`stopped`) cut it short.
fn group_answer(
    mut answer: Value,
    ids: &[MessageId],
    done: usize,
    stopped: Option<String>,
) -> Response {
    let remaining = ids.len() - done;
    answer["remaining"] = json!(remaining);
    answer["next_after"] = match (remaining, done) {
        (0, _) | (_, 0) => Value::Null,
        _ => json!(ids[done - 1].0),
    };
    match stopped {
        None => axum::Json(answer).into_response(),
        Some(reason) => {
            answer["error"] = json!(reason);
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(answer)).into_response()
        }
    }
}

/// Closes message `id`'s open error with `note` and audits it under `actor`.
fn resolve_audited(
    journal: &dyn plexus_journal::Journal,
    id: MessageId,
    note: &str,
    actor: &str,
) -> plexus_journal::Result<()> {
    journal.resolve_audited(id, note, AuditEntry::resolve(actor, id, note))?;
    Ok(())
}

/// Replays every open error like message `like`'s (above `after`), in message order, at
/// most [`GROUP_ACTION_MAX`] or [`GROUP_ACTION_BUDGET`]'s worth; one audit entry each,
/// as single replays write. Members closed meanwhile are skipped; any other failure
/// stops the run and answers 503 with what was done.
async fn replay_like(
    admin: &Admin,
    like: MessageId,
    after: Option<i64>,
    note: &str,
    actor: &str,
) -> Response {
    let group = match group_of(admin, like, after).await {
        Ok(group) => group,
        Err(r) => return r,
    };
    // The audit entries and resolutions say it was a group action.
    let note = format!("{note} (replayed with the errors like message {like})");
    let started = std::time::Instant::now();
    let (mut requeued, mut filtered, mut failed, mut skipped) = (0, 0, 0, 0);
    let mut results = Vec::new();
    let mut stopped = None;
    for id in group.ids.iter().take(GROUP_ACTION_MAX) {
        if started.elapsed() > GROUP_ACTION_BUDGET {
            break;
        }
        let mut result = match admin.engine.replay(*id, &note, actor).await {
            Ok(outcome) => {
                match &outcome {
                    ReplayOutcome::Requeued { .. } => requeued += 1,
                    ReplayOutcome::Filtered { .. } => filtered += 1,
                    ReplayOutcome::FailedAgain(_) => failed += 1,
                }
                replay_json(outcome)
            }
            // Closed, or being replayed, by someone else meanwhile.
            Err(
                e @ (crate::OpError::NothingToReplay { .. }
                | crate::OpError::ReplayInProgress(_)
                | crate::OpError::NotKept(_)),
            ) => {
                skipped += 1;
                json!({"result": "skipped", "reason": e.to_string()})
            }
            Err(e) => {
                stopped = Some(format!("stopped at message {id}: {e}"));
                break;
            }
        };
        result["id"] = json!(id.0);
        results.push(result);
    }
    let acted = results.len();
    let answer = json!({
        "group": group.json,
        "replayed": requeued + filtered + failed,
        "requeued": requeued,
        "filtered": filtered,
        "failed": failed,
        "skipped": skipped,
        "results": results,
    });
    group_answer(answer, &group.ids, acted, stopped)
}

async fn resolve(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, OPERATORS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let noted = match noted(&body) {
        Ok(noted) => noted,
        Err(r) => return r,
    };
    let Some(note) = noted.note else {
        return problem(
            StatusCode::BAD_REQUEST,
            "resolving needs {\"note\": \"what was done\"}",
        );
    };
    let journal = admin.engine.journal().clone();
    let actor = caller.actor();
    if !noted.like {
        return match blocking(move || {
            resolve_audited(journal.as_ref(), MessageId(id), &note, &actor)
        })
        .await
        {
            Ok(_) => axum::Json(json!({"result": "resolved"})).into_response(),
            Err(r) => r,
        };
    }
    let group = match group_of(&admin, MessageId(id), noted.after).await {
        Ok(group) => group,
        Err(r) => return r,
    };
    let note = format!("{note} (resolved with the errors like message {id})");
    let Group {
        json: described,
        model,
        ids,
    } = group;
    let act_on: Vec<MessageId> = ids.iter().copied().take(GROUP_ACTION_MAX).collect();
    let done = tokio::task::spawn_blocking(move || {
        let (mut resolved, mut skipped) = (Vec::new(), Vec::new());
        for id in act_on {
            // Still the same problem? Another operator's replay may have closed it, or
            // filed a different error since the group was read.
            let open = journal
                .show(id)
                .map(|r| r.errors.into_iter().find(|e| e.resolution.is_none()));
            let same = match open {
                Ok(Some(error)) => crate::error_groups::same_problem(&error, &model),
                Ok(None) | Err(plexus_journal::Error::NotFound(_)) => false,
                Err(e) => {
                    return (
                        resolved,
                        skipped,
                        Some(format!("stopped at message {id}: {e}")),
                    );
                }
            };
            if !same {
                skipped.push(id.0);
                continue;
            }
            match resolve_audited(journal.as_ref(), id, &note, &actor) {
                Ok(_) => resolved.push(id.0),
                Err(plexus_journal::Error::NoOpenError(_)) => skipped.push(id.0),
                Err(e) => {
                    return (
                        resolved,
                        skipped,
                        Some(format!("stopped at message {id}: {e}")),
                    );
                }
            }
        }
        (resolved, skipped, None)
    })
    .await;
    let (resolved, skipped, stopped) = match done {
        Ok(done) => done,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let acted = resolved.len() + skipped.len();
    let answer = json!({
        "group": described,
        "resolved": resolved.len(),
        "skipped": skipped.len(),
        "ids": resolved,
    });
    group_answer(answer, &ids, acted, stopped)
}

async fn rollback(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    let done = tokio::task::spawn_blocking(move || engine.rollback(&name, &actor)).await;
    match done {
        Ok(Ok(())) => axum::Json(json!({"result": "rolled back"})).into_response(),
        Ok(Err(crate::OpError::NoSuchInterface(n))) => {
            problem(StatusCode::NOT_FOUND, format!("no interface {n}"))
        }
        Ok(Err(e @ crate::OpError::NothingToRollBack(_))) => {
            problem(StatusCode::CONFLICT, e.to_string())
        }
        Ok(Err(e)) => op_problem(&e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /admin/v1/plugins`, body: the component's bytes. Stored by sha256.
async fn upload(State(admin): State<Admin>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let engine = admin.engine.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let inspection = engine.store_plugin(&body)?;
        engine.audit_action(
            &caller.actor(),
            "upload",
            &format!("plugin:{}", inspection.sha256),
            &format!(
                "{} bytes; capabilities {:?}; tables {:?}",
                inspection.size,
                inspection.capabilities(),
                inspection.reads_tables,
            ),
        )?;
        Ok::<_, crate::OpError>(inspection)
    })
    .await;
    match stored {
        Ok(Ok(i)) => (StatusCode::CREATED, axum::Json(inspection_json(&i))).into_response(),
        Ok(Err(e)) => problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A plug-in version as the reviewer's sheet shows it.
fn inspection_json(i: &plexus_sandbox::inspect::Inspection) -> Value {
    json!({
        "sha256": i.sha256,
        "size": i.size,
        "capabilities": i.capabilities(),
        "loadable": i.loadable(),
        "refused_imports": i.refused_imports(),
        "reads_tables": i.reads_tables,
        "requests_reuse": i.requests_reuse,
        "imports": i.imports_json(),
        "exports": i.exports,
        "producers": i.producers,
    })
}

/// `GET /admin/v1/plugins`: every version uploaded or running, with the interfaces
/// whose active chain runs it.
async fn plugins(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&admin, &headers, READERS) {
        return r;
    }
    let engine = admin.engine.clone();
    match op(move || engine.plugin_versions()).await {
        Ok(versions) => axum::Json(json!({
            "plugins": versions.iter().map(|(i, active_on)| json!({
                "sha256": i.sha256,
                "size": i.size,
                "capabilities": i.capabilities(),
                "active_on": active_on,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /admin/v1/plugins/{sha256}`: one version's inspection.
async fn plugin(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
) -> Response {
    if let Err(r) = authorize(&admin, &headers, READERS) {
        return r;
    }
    let engine = admin.engine.clone();
    match op(move || engine.plugin_versions()).await {
        // A prefix of 8 or more digits will do, when it names one version.
        Ok(versions) => match crate::chains::resolve_digest(
            None,
            versions.iter().map(|(i, _)| i.sha256.as_str()),
            &sha256,
        ) {
            Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, e),
            Ok(full) => match versions
                .into_iter()
                .find(|(i, _)| Some(&i.sha256) == full.as_ref())
            {
                Some((i, active_on)) => {
                    let mut body = inspection_json(&i);
                    body["active_on"] = json!(active_on);
                    axum::Json(body).into_response()
                }
                None => problem(
                    StatusCode::NOT_FOUND,
                    format!("no plug-in version {sha256} is uploaded or running"),
                ),
            },
        },
        Err(r) => r,
    }
}

/// The `chain` of an activate or trial body.
fn chain_of(body: &Value) -> Option<Vec<(String, String)>> {
    body.get("chain")?
        .as_array()?
        .iter()
        .map(|stage| {
            Some((
                stage.get("plugin")?.as_str()?.to_owned(),
                stage.get("sha256")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// `POST /admin/v1/interfaces/{name}/trial`, body: `{"chain": [...], "messages": [ids]}`.
/// Runs the messages through the candidate chain; nothing is journaled or delivered.
async fn trial(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, OPERATORS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let chain = parsed.as_ref().and_then(chain_of);
    let ids: Option<Vec<MessageId>> = parsed.as_ref().and_then(|v| {
        v.get("messages")?
            .as_array()?
            .iter()
            .map(|id| id.as_i64().map(MessageId))
            .collect()
    });
    let (Some(chain), Some(ids)) = (chain, ids) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "body must be {\"chain\": [{\"plugin\": NAME, \"sha256\": DIGEST}, ...], \"messages\": [ID, ...]}",
        );
    };
    if ids.len() > 1000 {
        return problem(StatusCode::BAD_REQUEST, "at most 1000 messages per trial");
    }
    match admin
        .engine
        .trial(&name, &chain, &ids, &caller.actor())
        .await
    {
        Ok(results) => axum::Json(json!({
            "results": results.iter().map(|(id, r)| match r {
                Ok(crate::Verdict::Forwarded) => json!({"id": id.0, "result": "forwarded"}),
                Ok(crate::Verdict::Filtered { plugin, reason }) => json!({
                    "id": id.0, "result": "filtered", "plugin": plugin,
                    "reason": masked_stage_detail(plexus_journal::OutcomeKind::Filter, reason),
                }),
                Ok(crate::Verdict::Failed(f)) => json!({
                    "id": id.0, "result": "failed", "stage": f.stage, "kind": f.kind.as_str(),
                    "path": f.path, "reason": f.reason,
                }),
                Err(e) => json!({"id": id.0, "result": "error", "reason": e.to_string()}),
            }).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(crate::OpError::NoSuchInterface(n)) => {
            problem(StatusCode::NOT_FOUND, format!("no interface {n}"))
        }
        Err(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// `POST /admin/v1/interfaces/{name}/activate`, body:
/// `{"chain": [{"plugin": "visit-status-map", "sha256": "..."}]}`.
async fn activate(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let chain = serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(chain_of);
    let Some(chain) = chain else {
        return problem(
            StatusCode::BAD_REQUEST,
            "body must be {\"chain\": [{\"plugin\": NAME, \"sha256\": DIGEST}, ...]}",
        );
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    // Stages by name, before and after: an activation names the whole chain, so a stage
    // left out is removed, and the answer says so.
    let names = |chain: &[(String, String)]| -> Vec<String> {
        chain.iter().map(|(name, _)| name.clone()).collect()
    };
    let before = engine
        .active_chain(&name)
        .map(|c| names(&c.digests()))
        .unwrap_or_default();
    let after = names(&chain);
    let done =
        tokio::task::spawn_blocking(move || engine.activate_stored(&name, &chain, &actor)).await;
    match done {
        Ok(Ok(changes)) => axum::Json(json!({
            "result": "activated",
            "stages_removed": before.iter().filter(|n| !after.contains(n)).collect::<Vec<_>>(),
            "stages_added": after.iter().filter(|n| !before.contains(n)).collect::<Vec<_>>(),
            "capability_changes": capability_changes(&changes),
        }))
        .into_response(),
        Ok(Err(crate::OpError::NoSuchInterface(n))) => {
            problem(StatusCode::NOT_FOUND, format!("no interface {n}"))
        }
        Ok(Err(e)) => op_problem(&e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The answer for a failed operator action: 404 for what does not exist, 422 for what
/// the gate or the state refuses, 500 otherwise.
fn op_problem(e: &crate::OpError) -> Response {
    use crate::OpError;
    let status = match e {
        OpError::NoSuchInterface(_) | OpError::NoShadow { .. } => StatusCode::NOT_FOUND,
        OpError::Journal(plexus_journal::Error::NotFound(_)) => StatusCode::NOT_FOUND,
        OpError::Journal(_)
        | OpError::Internal(_)
        | OpError::Store(_)
        | OpError::ChainNotKept(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    problem(status, e.to_string())
}

/// Runs an engine operation off the async threads; its error becomes the answer
/// ([`op_problem`]).
async fn op<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::OpError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(op_problem(&e)),
        Err(e) => Err(problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn capability_changes(changes: &[crate::CapabilityChange]) -> Vec<Value> {
    changes
        .iter()
        .map(|c| {
            json!({
                "plugin": c.plugin, "sha256": c.sha256, "added": c.added, "removed": c.removed,
            })
        })
        .collect()
}

/// `POST /admin/v1/interfaces/{name}/shadow`, body `{"chain": [...]}`: runs the
/// candidate beside the active chain on live traffic; nothing it outputs is delivered.
async fn shadow_start(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(chain) = serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(chain_of)
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "body must be {\"chain\": [{\"plugin\": NAME, \"sha256\": DIGEST}, ...]}",
        );
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    match op(move || engine.shadow_start(&name, &chain, &actor)).await {
        Ok((run, changes)) => (
            StatusCode::CREATED,
            axum::Json(json!({
                "result": "shadowing",
                "run": run,
                "capability_changes": capability_changes(&changes),
            })),
        )
            .into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
struct ShadowQuery {
    run: Option<i64>,
    unmasked: Option<bool>,
    examples: Option<usize>,
}

/// `GET /admin/v1/interfaces/{name}/shadow[?run=ID][&unmasked=true]`: the report of the
/// latest (or the named) shadow run. Example values are masked unless `unmasked=true`,
/// which needs a role that may see message content and is audited.
async fn shadow_report(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ShadowQuery>,
) -> Response {
    let unmasked = q.unmasked.unwrap_or(false);
    let caller = match authorize(&admin, &headers, if unmasked { OPERATORS } else { READERS }) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let options = crate::shadow::ReportOptions {
        unmasked,
        examples: q.examples.unwrap_or(5).min(100),
    };
    let engine = admin.engine.clone();
    let report = op(move || {
        let report = engine.shadow_report(&name, q.run, options)?;
        if unmasked {
            engine.audit_action(
                &caller.actor(),
                "unmasked-view",
                &format!("interface:{name}"),
                &format!("shadow report, run {}", report.run),
            )?;
        }
        Ok(report)
    })
    .await;
    match report {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /admin/v1/interfaces/{name}/shadow`: stops the shadow run.
async fn shadow_stop(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    match op(move || engine.shadow_stop(&name, &actor)).await {
        Ok(run) => axum::Json(json!({ "result": "stopped", "run": run })).into_response(),
        Err(r) => r,
    }
}

/// `POST /admin/v1/interfaces/{name}/shadow/promote`: activates the shadow candidate
/// through the full gate and ends the shadow run.
async fn shadow_promote(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let caller = match authorize(&admin, &headers, DEPLOYERS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    match op(move || engine.shadow_promote(&name, &actor)).await {
        Ok((run, changes, removed, added)) => axum::Json(json!({
            "result": "promoted",
            "run": run,
            "stages_removed": removed,
            "stages_added": added,
            "capability_changes": capability_changes(&changes),
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /admin/v1/grants/{plugin}`: the plug-in's grants now, and the config's.
async fn grants(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(plugin): Path<String>,
) -> Response {
    if let Err(r) = authorize(&admin, &headers, EVERYONE) {
        return r;
    }
    let configured = admin
        .engine
        .config()
        .plugins
        .iter()
        .find(|(n, _)| n.as_str() == plugin)
        .map(|(_, p)| p.grants.clone());
    match (admin.engine.grants_of(&plugin), configured) {
        (Some(now), Some(config)) => axum::Json(json!({
            "plugin": plugin,
            "grants": now.to_list(),
            "config": config.to_list(),
            "overridden": now != config,
        }))
        .into_response(),
        _ => problem(
            StatusCode::NOT_FOUND,
            format!("plug-in {plugin} is not defined in the site config"),
        ),
    }
}

/// `PUT /admin/v1/grants/{plugin}`, body `{"grants": [...]}`: the reviewer's decision,
/// effective at once (running versions are relinked) and audited.
async fn set_grants(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(plugin): Path<String>,
    body: Bytes,
) -> Response {
    let caller = match authorize(&admin, &headers, AUDITORS) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let items: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("grants")?.clone()).ok());
    let Some(items) = items else {
        return problem(
            StatusCode::BAD_REQUEST,
            "body must be {\"grants\": [\"log\", \"tables:NAME\", ...]}",
        );
    };
    let engine = admin.engine.clone();
    let actor = caller.actor();
    match tokio::task::spawn_blocking(move || engine.set_grants(&plugin, &items, &actor)).await {
        Ok(Ok(change)) => axum::Json(change).into_response(),
        Ok(Err(crate::OpError::UnknownPlugin(p))) => problem(
            StatusCode::NOT_FOUND,
            format!("plug-in {p} is not defined in the site config"),
        ),
        Ok(Err(e)) => op_problem(&e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn audit(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Err(r) = authorize(&admin, &headers, AUDITORS) {
        return r;
    }
    let journal = admin.engine.journal().clone();
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(100).min(10_000));
    match blocking(move || journal.audit_log(after, limit)).await {
        Ok(entries) => axum::Json(json!({
            "entries": entries.iter().map(|r| json!({
                "id": r.id,
                "at_ms": r.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                "at": plexus_hl7::ack::timestamp(r.at),
                "actor": r.entry.actor, "action": r.entry.action,
                "subject": r.entry.subject, "detail": r.entry.detail,
                "prev_hash": r.prev_hash, "hash": r.hash,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn audit_verify(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&admin, &headers, AUDITORS) {
        return r;
    }
    let journal = admin.engine.journal().clone();
    match blocking(move || journal.verify_audit()).await {
        Ok(v) => axum::Json(json!({
            "entries": v.entries,
            "intact": v.first_broken.is_none(),
            "first_broken": v.first_broken.map(|(id, why)| json!({"id": id, "reason": why})),
        }))
        .into_response(),
        Err(r) => r,
    }
}
