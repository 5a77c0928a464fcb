//! [`Disconnect`]: the request extension that tells the inner service its stream is over.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A request extension that tells the inner service when its response is over, so the producer
/// can stop its work. Every request through the layer carries one.
///
/// It resolves once the response body is dropped (the client left, or the stream ended), or when
/// the client is found stalled ([`SseLayer::write_deadline`](crate::SseLayer::write_deadline)).
/// Cloning is cheap.
///
/// ```
/// use axum::{body::Body, Extension};
/// use tower_sse::Disconnect;
///
/// async fn ticks(Extension(disconnect): Extension<Disconnect>) -> Body {
///     let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
///     tokio::spawn(async move {
///         for n in 0u64.. {
///             tokio::select! {
///                 _ = disconnect.disconnected() => break, // the client left: stop working
///                 sent = tx.send(Ok(format!("tick {n}"))) => if sent.is_err() { break },
///             }
///         }
///     });
///     Body::from_stream(tokio_stream_from(rx))
/// }
/// # fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>)
/// #     -> impl futures_util::Stream<Item = T> + Send + 'static {
/// #     futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Disconnect {
    token: CancellationToken,
}

impl Disconnect {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self { token }
    }

    /// Waits until the event stream is over.
    pub fn disconnected(&self) -> impl Future<Output = ()> + Send + '_ {
        self.token.cancelled()
    }

    /// Waits until the event stream is over, owning the handle (for `'static` tasks).
    pub fn into_disconnected(self) -> impl Future<Output = ()> + Send + 'static {
        self.token.cancelled_owned()
    }

    /// Whether the event stream is already over.
    pub fn is_disconnected(&self) -> bool {
        self.token.is_cancelled()
    }
}
