//! The operational endpoint on `[admin] listen`: `GET /metrics` (Prometheus text),
//! `GET /healthz` (200, or 503 naming the unhealthy mappings) and `GET /mappings` (each
//! mapping's state, last processing result and shards, as JSON).
//!
//! It only reads: the [`StatusBoard`] the sources report to, and the config. It serves
//! from before the first poll until the daemon has drained, so a drain can be watched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{AdminSettings, Config};
use crate::status::{Activity, MappingStatus, MappingView, ShardView, StatusBoard};
use crate::telemetry::source_label;

/// The endpoint, serving until [`Admin::stop`].
pub struct Admin {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `settings.listen` and serves `board`'s mappings of `config`.
    pub async fn start(
        settings: &AdminSettings,
        config: &Config,
        board: Arc<StatusBoard>,
    ) -> std::io::Result<Admin> {
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            board,
            mappings: config
                .mappings
                .iter()
                .map(|m| Configured {
                    id: m.id.clone(),
                    event_source_arn: m.source.arn.clone(),
                    function_name: m.function_name.clone(),
                    source: source_label(&m.kind),
                    enabled: m.enabled,
                })
                .collect(),
            unhealthy_after: settings.unhealthy_after,
        });
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/mappings", get(mappings))
            .with_state(shared);
        let stop = CancellationToken::new();
        let serving =
            axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::error!(error = %err, "the admin endpoint failed");
            }
        });
        info!(address = %address, "admin endpoint listening");
        Ok(Admin {
            address,
            stop,
            task,
        })
    }

    /// The address it listens on (the port chosen, when `listen` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving; requests under way finish first.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct Shared {
    board: Arc<StatusBoard>,
    /// Every mapping of the config, in config order.
    mappings: Vec<Configured>,
    unhealthy_after: Duration,
}

struct Configured {
    id: String,
    event_source_arn: String,
    function_name: String,
    source: &'static str,
    enabled: bool,
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.board.render_metrics(),
    )
        .into_response()
}

/// The `/healthz` body.
#[derive(Serialize)]
struct Health {
    /// `ok` or `unhealthy`.
    status: &'static str,
    unhealthy: Vec<Unhealthy>,
}

#[derive(Serialize)]
struct Unhealthy {
    id: String,
    reason: String,
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let unhealthy: Vec<Unhealthy> = shared
        .board
        .view(shared.unhealthy_after)
        .into_iter()
        .filter_map(|view| {
            view.unhealthy.map(|reason| Unhealthy {
                id: view.id,
                reason,
            })
        })
        .collect();
    let code = if unhealthy.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if unhealthy.is_empty() {
        "ok"
    } else {
        "unhealthy"
    };
    (code, Json(Health { status, unhealthy })).into_response()
}

/// The `/mappings` body.
#[derive(Serialize)]
struct Mappings {
    mappings: Vec<Mapping>,
}

/// One mapping in `/mappings`.
#[derive(Serialize)]
struct Mapping {
    id: String,
    event_source_arn: String,
    function_name: String,
    source: &'static str,
    /// `Creating` (its source not open yet), `Enabled`, `Disabled` or `Failed`.
    state: &'static str,
    last_processing_result: String,
    healthy: bool,
    /// Why it is unhealthy, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    unhealthy_reason: Option<String>,
    activity: Activity,
    /// Stream mappings only.
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<ShardView>>,
}

async fn mappings(State(shared): State<Arc<Shared>>) -> Json<Mappings> {
    let mut views = shared.board.view(shared.unhealthy_after);
    let mappings = shared
        .mappings
        .iter()
        .map(|configured| {
            let view = views
                .iter()
                .position(|v| v.id == configured.id)
                .map(|i| views.swap_remove(i));
            mapping(configured, view)
        })
        .collect();
    Json(Mappings { mappings })
}

fn mapping(configured: &Configured, view: Option<MappingView>) -> Mapping {
    let shards = |view: &MappingView| (configured.source != "sqs").then(|| view.shards.clone());
    let base = Mapping {
        id: configured.id.clone(),
        event_source_arn: configured.event_source_arn.clone(),
        function_name: configured.function_name.clone(),
        source: configured.source,
        state: "Disabled",
        last_processing_result: "No records processed".into(),
        healthy: true,
        unhealthy_reason: None,
        activity: Activity::default(),
        shards: None,
    };
    match view {
        // not registered: disabled
        None if !configured.enabled => base,
        None => Mapping {
            state: "Creating",
            ..base
        },
        Some(view) => Mapping {
            state: match view.status {
                MappingStatus::Starting => "Creating",
                MappingStatus::Running => "Enabled",
                MappingStatus::Failed { .. } => "Failed",
            },
            shards: shards(&view),
            last_processing_result: view.last_processing_result,
            healthy: view.unhealthy.is_none(),
            unhealthy_reason: view.unhealthy,
            activity: view.activity,
            ..base
        },
    }
}
