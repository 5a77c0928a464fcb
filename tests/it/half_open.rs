//! A half-open peer: a client in its own network namespace, joined by a veth pair, whose link is
//! cut while its event stream is open. Its packets stop without a FIN or RST, so nothing on the
//! server notices until TCP gives up on the unacknowledged heartbeats: with `TCP_USER_TIMEOUT`
//! set to the write deadline that is within heartbeat interval + deadline; without it, minutes.
//!
//! Needs root, iproute2 (`ip netns`) and curl (the client); without them it is skipped with a
//! message, unless `TOWER_SSE_REQUIRE_NETNS=1` (as in CI) makes that a failure.

use std::process::Stdio;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::{body::Body, routing::get, Router};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_sse::{CloseInfo, SseLayer};

const HEARTBEAT: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(2);

/// Runs `ip` with `args`, failing the test with its stderr if it fails.
fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace with a veth pair to this one, removed on drop.
struct Namespace {
    name: String,
    inside: String,
    server_ip: String,
}

impl Namespace {
    fn create() -> Self {
        let id = std::process::id() % 60000;
        let name = format!("tsse-{id}");
        let (outside, inside) = (format!("tsse-s{id}"), format!("tsse-c{id}"));
        let subnet = format!("10.{}.{}", 100 + id / 250 % 100, id % 250);
        let (server_ip, client_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
        // A leftover from an interrupted run goes first.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        ip(&["netns", "add", &name]);
        let namespace = Self {
            name,
            inside,
            server_ip,
        };
        let ns = namespace.name.as_str();
        let inside = namespace.inside.as_str();
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", inside,
        ]);
        ip(&["link", "set", inside, "netns", ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", namespace.server_ip),
            "dev",
            &outside,
        ]);
        ip(&["link", "set", &outside, "up"]);
        let client = format!("{client_ip}/24");
        ip(&["-n", ns, "addr", "add", &client, "dev", inside]);
        ip(&["-n", ns, "link", "set", inside, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        namespace
    }

    /// Cuts the client's link: its packets stop, and ours no longer reach it.
    fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inside, "down"]);
    }

    /// Starts curl inside the namespace, subscribed to `url`.
    fn subscribe(&self, url: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-sN"])
            .args(["-H", "Accept: text/event-stream", url])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run curl")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth inside it, and so its peer here.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Reads a child's output until it contains `needle`.
async fn read_until(child: &mut Child, needle: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
            .await
            .expect("curl output in time")
            .expect("read curl output");
        assert!(n > 0, "curl ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false);
    let runs = |program: &str| {
        std::process::Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !root {
        Some("network namespaces need root")
    } else if !runs("ip") {
        Some("`ip` (iproute2) is not installed")
    } else if !runs("curl") {
        Some("curl is not installed")
    } else {
        None
    }
}

/// Serves `/events` (one event, then heartbeats only) on `ip`, on two ports: one whose accepted
/// sockets get `TCP_USER_TIMEOUT` = the write deadline, one left at the system defaults. Each
/// close is sent with its port.
async fn serve(ip: &str, closed: mpsc::UnboundedSender<(u16, Instant, CloseInfo)>) -> (u16, u16) {
    let mut ports = Vec::new();
    for user_timeout in [Some(DEADLINE), None] {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind in the veth subnet");
        let port = listener.local_addr().expect("address").port();
        ports.push(port);
        let closed = closed.clone();
        let layer = SseLayer::new()
            .heartbeat(HEARTBEAT)
            .write_deadline(DEADLINE)
            .on_disconnect(move |info| {
                let _ = closed.send((port, Instant::now(), info.clone()));
            });
        let handler = || async {
            let hello = futures_util::stream::iter([Ok::<_, std::io::Error>("hello")]);
            Body::from_stream(futures_util::StreamExt::chain(
                hello,
                futures_util::stream::pending(),
            ))
        };
        let app = Router::new().route("/events", get(handler)).layer(layer);
        let listener = listener.tap_io(move |tcp| {
            let socket = socket2::SockRef::from(&*tcp);
            socket
                .set_tcp_user_timeout(user_timeout)
                .expect("set TCP_USER_TIMEOUT");
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    (ports[0], ports[1])
}

#[tokio::test]
async fn a_half_open_peer_is_found_within_heartbeat_plus_deadline_with_tcp_user_timeout() {
    if let Some(reason) = missing() {
        let required = std::env::var("TOWER_SSE_REQUIRE_NETNS").is_ok_and(|v| v == "1");
        assert!(!required, "TOWER_SSE_REQUIRE_NETNS=1, but {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let namespace = Namespace::create();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let (with_timeout, without) = serve(&namespace.server_ip, closed_tx).await;

    let mut clients = Vec::new();
    for port in [with_timeout, without] {
        let url = format!("http://{}:{port}/events", namespace.server_ip);
        let mut curl = namespace.subscribe(&url);
        read_until(&mut curl, "data: hello").await;
        clients.push(curl);
    }
    // A heartbeat or two on a healthy link changes nothing.
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert!(closed_rx.try_recv().is_err(), "nothing reported yet");

    let cut = Instant::now();
    namespace.cut();
    let (port, found, info) = tokio::time::timeout(HEARTBEAT + DEADLINE * 3, closed_rx.recv())
        .await
        .expect("found")
        .expect("reported");
    let detection = found - cut;
    println!(
        "half-open peer found {detection:?} after its link was cut ({:?}; heartbeat {HEARTBEAT:?}, \
         deadline and TCP_USER_TIMEOUT {DEADLINE:?})",
        info.reason
    );
    assert_eq!(port, with_timeout);
    assert!(info.reason.is_disconnect());
    assert!(detection >= DEADLINE, "{detection:?}");
    assert!(
        detection <= HEARTBEAT + DEADLINE + Duration::from_millis(500),
        "{detection:?}"
    );

    // Without the socket option, the same peer is still not found well past that: the layer
    // alone cannot tell unacknowledged heartbeats from delivered ones.
    tokio::time::sleep(HEARTBEAT + DEADLINE).await;
    let unseen = cut.elapsed();
    assert!(closed_rx.try_recv().is_err(), "the default socket noticed");
    println!("without TCP_USER_TIMEOUT: still not found {unseen:?} after the cut");
    drop(clients);
}
