//! Metrics on the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what the
//! streams report to whichever recorder the application installed (the names are in the crate
//! docs' table). Without the feature, every function here is an empty inline one and every type
//! holds nothing.

#[cfg(feature = "metrics")]
mod on {
    use std::sync::Arc;

    use metrics::{counter, gauge, Counter, Gauge, Label};

    use crate::{CloseReason, StreamLimit};

    pub(crate) type LabelFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

    /// The label a stream's metrics carry, taken from its request.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct StreamLabel(Option<Label>);

    impl StreamLabel {
        pub(crate) fn of(config: &crate::config::Config, parts: &http::request::Parts) -> Self {
            let label = config.metrics_label.as_ref();
            Self(label.and_then(|(key, value)| Some(Label::new(*key, value(parts)?))))
        }
    }

    /// The handles of one stream's metrics, resolved once when it is made.
    pub(crate) struct StreamMetrics {
        open: Gauge,
        events: Counter,
        bytes: Counter,
        labels: Vec<Label>,
    }

    impl StreamMetrics {
        /// The metrics of a stream labelled `label`; nothing is counted until it
        /// [opens](Self::opened).
        pub(crate) fn new(label: StreamLabel) -> Self {
            let labels: Vec<Label> = label.0.into_iter().collect();
            Self {
                open: gauge!("sse_streams_open", labels.iter()),
                events: counter!("sse_events_sent_total", labels.iter()),
                bytes: counter!("sse_bytes_sent_total", labels.iter()),
                labels,
            }
        }

        /// The stream opened (its first poll).
        pub(crate) fn opened(&self) {
            counter!("sse_streams_opened_total", self.labels.iter()).increment(1);
            self.open.increment(1.0);
        }

        /// `events` events in `bytes` bytes were handed to the connection.
        pub(crate) fn sent(&self, events: u64, bytes: u64) {
            if events > 0 {
                self.events.increment(events);
            }
            self.bytes.increment(bytes);
        }

        /// The stream closed.
        pub(crate) fn closed(&self, reason: CloseReason) {
            self.open.decrement(1.0);
            let mut labels = self.labels.clone();
            labels.push(Label::new("reason", reason.as_str()));
            counter!("sse_streams_closed_total", labels).increment(1);
            if reason == CloseReason::Stalled {
                counter!("sse_stalls_total", self.labels.iter()).increment(1);
            }
        }
    }

    /// A request was refused by `limit`.
    pub(crate) fn refused(limit: StreamLimit) {
        counter!("sse_streams_refused_total", "limit" => limit.as_str()).increment(1);
    }

    /// A hub subscription started (`1`) or ended (`-1`).
    #[cfg(feature = "hub")]
    pub(crate) fn hub_subscribers(delta: f64) {
        gauge!("sse_hub_subscribers").increment(delta);
    }

    /// An event was published to a hub.
    #[cfg(feature = "hub")]
    pub(crate) fn hub_published() {
        counter!("sse_hub_publishes_total").increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use crate::{CloseReason, StreamLimit};

    #[derive(Debug, Clone, Default)]
    pub(crate) struct StreamLabel;

    impl StreamLabel {
        #[inline(always)]
        pub(crate) fn of(_: &crate::config::Config, _: &http::request::Parts) -> Self {
            Self
        }
    }

    pub(crate) struct StreamMetrics;

    impl StreamMetrics {
        #[inline(always)]
        pub(crate) fn new(_: StreamLabel) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn opened(&self) {}

        #[inline(always)]
        pub(crate) fn sent(&self, _: u64, _: u64) {}

        #[inline(always)]
        pub(crate) fn closed(&self, _: CloseReason) {}
    }

    #[inline(always)]
    pub(crate) fn refused(_: StreamLimit) {}

    #[cfg(feature = "hub")]
    #[inline(always)]
    pub(crate) fn hub_subscribers(_: f64) {}

    #[cfg(feature = "hub")]
    #[inline(always)]
    pub(crate) fn hub_published() {}
}

pub(crate) use on::*;
