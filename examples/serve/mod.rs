//! Serving a Tower service the way a production server should, shared by the examples: a
//! timeout on reading each request head, graceful shutdown on a signal, and a bounded drain.
//!
//! `axum::serve` exposes neither the head timeout nor a bound on the drain, so this serves
//! through hyper-util's connection builder (HTTP/1.1 and HTTP/2) directly.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ConnectInfo;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send its first byte, and then each request head. A
/// client that sends half a head is closed after this, not held until the file limit is hit.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish after the shutdown signal before they are dropped.
/// Event streams under `SseLayer::graceful_shutdown` end at once; this bounds everything else
/// (a slow download, a head that never completes).
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains for at most
/// [`DRAIN_TIMEOUT`]. `configure` sees every accepted socket first (to set socket options).
/// Every request carries the peer's address as axum's `ConnectInfo<SocketAddr>` extension.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    configure: impl Fn(&TcpStream),
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: wait, and keep serving the open connections.
                Err(error) => {
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        configure(&tcp);
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        tokio::spawn(async move {
            if !protocol_known(&tcp, HEADER_READ_TIMEOUT).await {
                return;
            }
            let service =
                tower::ServiceExt::map_request(service, move |mut request: Request<_>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
            let service = TowerToHyperService::new(service);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            // A client that leaves mid-stream ends its connection with an error: not worth a
            // line.
            let _ = watcher.watch(connection).await;
        });
    }
    drop(listener);
    if timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        eprintln!("connections still open after {DRAIN_TIMEOUT:?}: dropped");
    }
}

/// Waits until the first bytes tell HTTP/1 from HTTP/2: hyper-util's detection waits for them
/// with no deadline of its own, and hyper's head timeout starts only after it. False if the peer
/// closes, fails, or says too little within `limit` (it is then dropped).
async fn protocol_known(tcp: &TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = Instant::now() + limit;
    let mut start = [0; PREFACE.len()];
    loop {
        match timeout_at(deadline, tcp.peek(&mut start)).await {
            Ok(Ok(n)) if n == PREFACE.len() || (n > 0 && start[..n] != PREFACE[..n]) => {
                return true
            }
            // Part of the HTTP/2 preface: a peek returns at once while bytes wait, so look
            // again a little later.
            Ok(Ok(n)) if n > 0 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Cancels `shutdown` on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub(crate) fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        println!("shutting down: ending open streams");
        shutdown.cancel();
    });
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what orchestrators send before a kill).
async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
