//! The operational endpoint on `[admin] listen`: `GET /metrics` (Prometheus text),
//! `GET /healthz` (200, or 503 naming the unhealthy mappings), `GET /mappings` (each
//! mapping's state, last processing result and shards, as JSON) and `GET /` (the same for
//! a person: a plain HTML page that reloads itself, no script).
//!
//! It only reads: the [`StatusBoard`] the sources report to, and the config. It serves
//! from before the first poll until the daemon has drained, so a drain can be watched.

use std::fmt::Write;
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
            .route("/", get(page))
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
    Json(Mappings {
        mappings: shared.mappings(),
    })
}

impl Shared {
    /// Every mapping of the config as it stands now, in config order.
    fn mappings(&self) -> Vec<Mapping> {
        let mut views = self.board.view(self.unhealthy_after);
        self.mappings
            .iter()
            .map(|configured| {
                let view = views
                    .iter()
                    .position(|v| v.id == configured.id)
                    .map(|i| views.swap_remove(i));
                mapping(configured, view)
            })
            .collect()
    }
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

/// How often the status page reloads itself.
const PAGE_REFRESH_SECS: u32 = 5;

async fn page(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_page(&shared.mappings()),
    )
        .into_response()
}

/// The status page: a table of mappings, and under each stream mapping its shards.
fn render_page(mappings: &[Mapping]) -> String {
    let unhealthy = mappings.iter().filter(|m| !m.healthy).count();
    let mut html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{PAGE_REFRESH_SECS}">
<title>esmd: {summary}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #17692e; }} .warn {{ color: #9a6700; }} .bad {{ color: #a31515; font-weight: bold; }}
.off {{ color: #777; }}
code {{ font-size: 90%; }}
</style></head><body>
<h1>esmd</h1>
<p class="{summary_class}">{summary}</p>
<p><a href="/mappings">/mappings</a> · <a href="/healthz">/healthz</a> · <a href="/metrics">/metrics</a> · reloads every {PAGE_REFRESH_SECS} s</p>
<table><tr><th>mapping</th><th>source</th><th>function</th><th>state</th><th>last processing result</th><th>invoked</th><th>deleted</th><th>discarded</th><th>filtered out</th></tr>
"#,
        summary = if unhealthy == 0 {
            format!("all {} mapping(s) healthy", mappings.len())
        } else {
            format!("{unhealthy} of {} mapping(s) unhealthy", mappings.len())
        },
        summary_class = if unhealthy == 0 { "ok" } else { "bad" },
    );
    for m in mappings {
        let class = match (m.healthy, m.state) {
            (false, _) => "bad",
            (true, "Disabled") => "off",
            // in trouble, not for long enough to be unhealthy yet
            _ if m.last_processing_result.starts_with("PROBLEM") => "warn",
            (true, _) => "ok",
        };
        let _ = writeln!(
            html,
            "<tr><td><code>{}</code></td><td>{} <code>{}</code></td><td>{}</td><td class=\"{class}\">{}</td><td class=\"{class}\">{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&m.id),
            m.source,
            escape(&m.event_source_arn),
            escape(&m.function_name),
            m.state,
            escape(&m.last_processing_result),
            m.unhealthy_reason
                .as_ref()
                .map(|why| format!("<br>unhealthy: {}", escape(why)))
                .unwrap_or_default(),
            m.activity.records_invoked,
            m.activity.records_deleted,
            m.activity.records_discarded,
            m.activity.records_filtered_out,
        );
    }
    html.push_str("</table>\n");
    for m in mappings {
        let Some(shards) = &m.shards else { continue };
        let _ = write!(
            html,
            "<h2>Shards of <code>{}</code></h2>\n<table><tr><th>shard</th><th>checkpoint</th><th>iterator age</th><th>in-flight batches</th><th>state</th></tr>\n",
            escape(&m.id)
        );
        if shards.is_empty() {
            html.push_str("<tr><td colspan=\"5\" class=\"off\">no shards seen yet</td></tr>\n");
        }
        for shard in shards {
            let state = if shard.finished {
                "finished"
            } else if shard.closed {
                "closed, reading to its end"
            } else if shard.iterator_age_ms.is_some() {
                "reading"
            } else {
                "waiting"
            };
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{state}</td></tr>",
                escape(&shard.shard_id),
                shard
                    .checkpoint
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "none".into()),
                shard
                    .iterator_age_ms
                    .map(|ms| format!("{ms} ms"))
                    .unwrap_or_else(|| "-".into()),
                shard.in_flight_batches,
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// `text` safe inside HTML elements and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(id: &str, source: &'static str, enabled: bool) -> Configured {
        Configured {
            id: id.into(),
            event_source_arn: format!("arn:aws:{source}:us-east-1:1:{id}"),
            function_name: "f".into(),
            source,
            enabled,
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_lists_each_shard() {
        let failed = MappingView {
            id: "<clicks>".into(),
            status: MappingStatus::Failed {
                reason: "bad & broken".into(),
            },
            activity: Activity::default(),
            last_processing_result: "PROBLEM: failed to start: bad & broken".into(),
            unhealthy: Some("failed to start: bad & broken".into()),
            shards: vec![ShardView {
                shard_id: "shardId-000000000001".into(),
                checkpoint: Some("49".into()),
                iterator_age_ms: Some(12),
                closed: false,
                finished: false,
                in_flight_batches: 1,
            }],
        };
        let mappings = [
            mapping(&configured("<clicks>", "kinesis", true), Some(failed)),
            mapping(&configured("off", "sqs", false), None),
        ];
        let html = render_page(&mappings);
        assert!(html.contains("1 of 2 mapping(s) unhealthy"), "{html}");
        assert!(html.contains("<code>&lt;clicks&gt;</code>"), "{html}");
        assert!(!html.contains("<clicks>"), "{html}");
        assert!(html.contains("bad &amp; broken"), "{html}");
        assert!(
            html.contains("<td><code>shardId-000000000001</code></td><td><code>49</code></td><td class=\"num\">12 ms</td><td class=\"num\">1</td><td>reading</td>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"off\">Disabled</td>"), "{html}");
        assert!(!html.contains("<script"), "no script");
    }

    #[test]
    fn a_mapping_not_registered_is_disabled_or_not_started_yet() {
        let off = mapping(&configured("off", "sqs", false), None);
        assert_eq!((off.state, off.healthy), ("Disabled", true));
        let starting = mapping(&configured("on", "kinesis", true), None);
        assert_eq!(starting.state, "Creating");
        assert_eq!(starting.shards, None);
    }
}
