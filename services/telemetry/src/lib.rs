//! Traces and logs. [`init`] installs the process's `tracing` subscriber: logs (text, or JSON
//! lines that name their trace and span) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an
//! OpenTelemetry layer exporting spans over OTLP/HTTP (protobuf) with the standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, …). Off, spans cost
//! what `tracing` spans cost and nothing is sent.
//!
//! The W3C trace context travels as a `traceparent` string: [`traceparent`] gives the current
//! span's (to store in an event's metadata or a wire message), [`follows`] makes a span a child
//! of one received. Span names and fields never carry a secret: they name commands, aggregates,
//! deployments, steps and images, never parameters, environments or credentials.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Log lines: for people, or one JSON object per line for a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flushes the spans not yet sent when the process ends (dropped last in `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("traces: the last spans could not be sent: {e}");
            }
        }
    }
}

/// Whether traces are asked for (the OTLP endpoint is set).
pub fn traces_wanted() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|e| !e.trim().is_empty())
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok_and(|e| !e.trim().is_empty())
}

/// Installs logging (filtered by `filter`, e.g. `NULLOPS_LOG`) and, when asked for, tracing.
pub fn init(format: LogFormat, filter: tracing_subscriber::EnvFilter) -> Telemetry {
    let provider = traces_wanted().then(exporter).and_then(|r| match r {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("traces: OTLP export cannot start ({e}); running without traces");
            None
        }
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Each layer has its own filter: quieter logs (NULLOPS_LOG=warn) keep every span, and
    // spans can be narrowed apart (NULLOPS_TRACE, `info` by default).
    let spans = tracing_subscriber::EnvFilter::try_from_env("NULLOPS_TRACE")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn,h2=warn,hyper=warn,reqwest=warn"));
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("nullops")).with_filter(spans));
    let registry = tracing_subscriber::registry().with(otel);
    match format {
        LogFormat::Json => {
            let fmt = tracing_subscriber::fmt::layer()
                .event_format(WithTrace(tracing_subscriber::fmt::format().json()))
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .with_writer(std::io::stdout)
                .with_filter(filter);
            registry.with(fmt).init();
        }
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout).with_filter(filter)).init(),
    }
    Telemetry { provider }
}

fn exporter() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).build()?;
    // The resource names the service from OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES);
    // the sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).build())
}

/// The JSON format with the current trace's and span's ids added (`trace_id`, `span_id`), so
/// a log line leads to its trace.
struct WithTrace(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &tracing::Event<'_>) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match (ids(), line.strip_suffix("}\n")) {
            (Some((trace, span)), Some(object)) => writeln!(writer, "{object},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}"),
            _ => writer.write_str(&line),
        }
    }
}

/// The current span's trace and span ids, when it is traced.
fn ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let c = span.span_context();
    c.is_valid().then(|| (c.trace_id().to_string(), c.span_id().to_string()))
}

struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

struct Collect(HashMap<String, String>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The W3C `traceparent` of the current span, when it is traced (it travels in event metadata
/// and wire messages so that the work it causes joins its trace).
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut out = Collect(HashMap::new());
    TraceContextPropagator::new().inject_context(&context, &mut out);
    out.0.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names (a malformed one is ignored: the span
/// starts a trace of its own).
pub fn follows(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| t.len() <= 128) else { return };
    let context = TraceContextPropagator::new().extract(&One(traceparent));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// A warning that may repeat without bound (a port someone hammers): said at most once per
/// `every`, each time with how many were kept quiet since, so a flood costs a line a minute
/// and its size still shows. Count the events themselves in a metric.
pub struct Quieted {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Quieted {
    pub const fn new(every: std::time::Duration) -> Self {
        Quieted { every, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(kept quiet since the last one)` when this occurrence should be logged; else
    /// `None`, and it is counted as kept quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }

    fn allow_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, quiet) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            *quiet += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(quiet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_said_once_a_window_with_how_many_were_kept_quiet() {
        let q = Quieted::new(std::time::Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        assert_eq!(q.allow_at(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(q.allow_at(t0 + std::time::Duration::from_millis(i)), None);
        }
        assert_eq!(q.allow_at(t0 + std::time::Duration::from_secs(61)), Some(1000));
        assert_eq!(q.allow_at(t0 + std::time::Duration::from_secs(62)), None);
    }

    #[test]
    fn a_traceparent_received_is_the_parent_and_is_passed_on() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            follows(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
            let _entered = span.enter();
            let child = tracing::info_span!("command");
            let _child = child.enter();
            let passed = traceparent().expect("traced");
            assert!(passed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{passed}");
            assert!(!passed.contains("00f067aa0ba902b7"), "the child's own span id: {passed}");
            assert_eq!(ids().map(|(t, _)| t).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        });
        // Without a traced span there is nothing to pass on, and nothing malformed is taken.
        assert_eq!(traceparent(), None);
        let span = tracing::info_span!("x");
        follows(&span, Some("not a traceparent"));
    }
}
