//! The server's life: bind, load the model while answering probes, serve, and on
//! shutdown drain in-flight requests before closing.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};

use crate::app::build_app;
use crate::backend::Backend;
use crate::config::Config;
use crate::state::{AppState, ServerSettings};

/// How long open connections get to close once draining is over.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub fn settings(config: &Config) -> ServerSettings {
    ServerSettings {
        max_request_body_bytes: usize::try_from(config.server.max_request_body_bytes.bytes()).unwrap_or(usize::MAX),
        vllm_compat_metrics: config.metrics.vllm_compat,
        model_aliases: vec![config.model.name.clone()],
        limits: config.limits.clone(),
        http: config.server.http_limits(),
    }
}

/// Serves the API on `listener` (with `TCP_NODELAY`, so small SSE chunks leave at once, and
/// the `[server]` timeouts and caps) until `close` resolves, then lets open connections finish.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    close: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send {
    let limits = state.settings().http;
    crate::conn::serve_connections(listener, build_app(state), limits, close)
}

/// Serves until `shutdown` resolves, then drains. Errors if the model fails to load.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state = AppState::new(settings(&config));
    crate::gateway::semantic::check_embedding_model(&config.gateway, &config.models)?;
    crate::gateway::install(&state, &config.gateway).await.context("cannot start the gateway")?;
    crate::gateway::metrics::listen(&state).await?;
    let telemetry = crate::telemetry::start(&config.gateway).context("cannot start the OTLP exporter")?;
    let listener = listen(&config.server)
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.server.host, config.server.port))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    let server = serve(listener, state.clone(), async {
        let _ = closed.await;
    });
    let server = tokio::spawn(server);
    let outcome = load_then_wait(&config, &state, shutdown).await;
    drain(&state, Duration::from_secs(config.server.drain_timeout_secs)).await;
    let _ = close.send(());
    if tokio::time::timeout(CLOSE_GRACE, server).await.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    if let Some(gateway) = state.gateway() {
        gateway.close().await;
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    if let Some(backend) = state.backend().cloned() {
        tokio::task::spawn_blocking(move || backend.shutdown()).await?;
    }
    tracing::info!("stopped");
    outcome
}

/// Binds the listening socket; accepted connections inherit its send buffer size.
async fn listen(server: &crate::config::ServerConfig) -> std::io::Result<TcpListener> {
    let Some(send_buffer) = server.send_buffer_bytes else {
        return TcpListener::bind((server.host.as_str(), server.port)).await;
    };
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "the host resolves to no address");
    let address = tokio::net::lookup_host((server.host.as_str(), server.port)).await?.next().ok_or_else(not_found)?;
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(u32::try_from(send_buffer.bytes()).unwrap_or(u32::MAX))?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn load_then_wait(config: &Config, state: &AppState, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    tracing::info!(model = %config.model.name, device = %config.model.device, "loading the model");
    let started = std::time::Instant::now();
    tokio::select! {
        () = &mut shutdown => Ok(()),
        loaded = async { load_embeddings(config, state).await?; Backend::launch(config).await } => {
            let backend = loaded.with_context(|| format!("cannot load the model `{}`", config.model.name))?;
            let info = backend.info();
            tracing::info!(
                served_model_name = %info.name,
                max_model_len = info.max_model_len,
                seconds = started.elapsed().as_secs_f64(),
                "model ready"
            );
            state.set_backend(backend.clone())?;
            wait_shutdown_or_failure(&backend, shutdown).await
        }
    }
}

/// Loads the `[[models]]` embedding models, each with its batcher, before the chat model.
pub async fn load_embeddings(config: &Config, state: &AppState) -> anyhow::Result<()> {
    if config.models.is_empty() {
        return Ok(());
    }
    let service = crate::embed::EmbeddingService::launch(&config.models, config.model.allow_hub).await?;
    state.set_embeddings(service)
}

/// Waits for the shutdown signal; an engine failure ends the wait with an error, so the
/// server drains and exits non-zero.
async fn wait_shutdown_or_failure(backend: &Backend, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::select! {
        () = shutdown => Ok(()),
        reason = backend.failed() => {
            tracing::error!(%reason, "the engine failed; draining and exiting");
            Err(anyhow::anyhow!("the engine failed: {reason}"))
        }
    }
}

/// Refuses new work (`/ready` turns 503) and waits for in-flight requests, up to `timeout`.
pub async fn drain(state: &AppState, timeout: Duration) {
    state.begin_drain();
    tracing::info!(in_flight = state.in_flight(), timeout_secs = timeout.as_secs(), "draining");
    if tokio::time::timeout(timeout, state.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "drain timeout passed; stopping anyway");
    }
}
