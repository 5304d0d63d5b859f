//! Trace context across the bus. A message carries the W3C `traceparent` of the span that
//! produced it (the gateway's request span, when traces are exported); the span that delivers it
//! continues that trace, so one referral's trace runs from the GP system's POST to the scheme's
//! receipt. Spans carry ids, queue names, attempts and outcomes: never patient data.
//!
//! Without a trace exporter installed (see the gateway's `telemetry` module) these are no-ops
//! apart from the parsing.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span context a version-00 `traceparent` names, if it is well formed and valid.
pub fn parse_traceparent(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    if flags.len() != 2 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Make `span` a child of the remote span `traceparent` names (ignored when malformed).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if let Some(parent) = parse_traceparent(traceparent) {
        let cx = opentelemetry::Context::new().with_remote_span_context(parent);
        // Fails only when the span is disabled or already started its own trace: then the
        // span simply stays where it is.
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` of `span`, when it is being exported (a valid OpenTelemetry context).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_malformed_ones_are_not() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(t).expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_an_exporter_a_span_has_no_traceparent() {
        assert_eq!(traceparent_of(&tracing::Span::current()), None);
    }
}
