//! OTLP/HTTP export (JSON) of the gateway's request spans. With no endpoint configured no
//! exporter is built and the gateway records nothing.

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use sconce_gateway::config::GatewayConfig;

/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "sconce";
const TRACES_PATH: &str = "/v1/traces";

/// The running exporter; [`Telemetry::shutdown`] exports what is still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Starts the exporter when an endpoint is configured (and the gateway, which meters
/// requests, is on). None otherwise.
pub fn start(config: &GatewayConfig) -> anyhow::Result<Option<Telemetry>> {
    let env = |name: &str| std::env::var(name).ok();
    if env("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let Some(endpoint) = traces_endpoint(config.otlp_endpoint.as_deref(), env) else {
        return Ok(None);
    };
    if !config.enabled {
        tracing::warn!(%endpoint, "an OTLP endpoint is set but the gateway is off: no request spans");
        return Ok(None);
    }
    let exporter =
        SpanExporter::builder().with_http().with_protocol(Protocol::HttpJson).with_endpoint(&endpoint).build()?;
    let service_name = env("OTEL_SERVICE_NAME").filter(|name| !name.is_empty()).unwrap_or(SERVICE_NAME.into());
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    sconce_gateway::telemetry::set_enabled(true);
    tracing::info!(%endpoint, "exporting request spans over OTLP/HTTP");
    Ok(Some(Telemetry { provider }))
}

impl Telemetry {
    /// Stops recording, exports the queued spans and closes the exporter.
    pub async fn shutdown(self) {
        sconce_gateway::telemetry::set_enabled(false);
        let provider = self.provider;
        // The SDK blocks while its export thread drains: keep that off the async workers.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the OTLP exporter did not shut down cleanly"),
            Err(error) => tracing::warn!(%error, "the OTLP exporter shutdown task failed"),
        }
    }
}

/// The traces URL. Environment beats the file, as everywhere in Sconce:
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT` or the
/// `otlp_endpoint` key as a base URL that `/v1/traces` is appended to.
pub fn traces_endpoint(configured: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |value: Option<String>| value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(url) = set(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return Some(url);
    }
    let base = set(env("OTEL_EXPORTER_OTLP_ENDPOINT")).or_else(|| set(configured.map(str::to_string)))?;
    if base.ends_with(TRACES_PATH) {
        return Some(base);
    }
    Some(format!("{}{TRACES_PATH}", base.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert_eq!(traces_endpoint(None, env_of(&[])), None);
        assert_eq!(traces_endpoint(Some("  "), env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])), None);
    }

    #[test]
    fn the_config_key_is_a_base_url() {
        let endpoint = traces_endpoint(Some("http://collector:4318/"), env_of(&[]));
        assert_eq!(endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let full = traces_endpoint(Some("http://collector:4318/v1/traces"), env_of(&[]));
        assert_eq!(full.as_deref(), Some("http://collector:4318/v1/traces"));
    }

    #[test]
    fn the_environment_beats_the_file() {
        let base = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")]);
        assert_eq!(traces_endpoint(Some("http://file:4318"), base).as_deref(), Some("http://env:4318/v1/traces"));
        let signal = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
        ]);
        assert_eq!(traces_endpoint(None, signal).as_deref(), Some("http://traces:9999/custom"));
    }
}
