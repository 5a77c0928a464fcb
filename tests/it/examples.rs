//! The examples as users run them (`cargo run --example ...`): each is started as its own
//! process and probed the way an adversarial review probed them, so that what it found (client
//! ids that panicked, a shutdown one client could hold up, heads never timed out, paths that
//! climbed out of the gateway's prefix, an unasked `101`) cannot come back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};

/// What the examples' serving loop allows for a request head (`examples/serve/mod.rs`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An example running as a process, killed when dropped.
struct Example {
    child: Child,
    addr: SocketAddr,
}

/// The path cargo built an example to: beside this test binary's `deps` folder.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile.join("examples").join(name)
}

/// Starts an example and waits for the address it prints (`http://ADDR`).
async fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Example {
    let path = example_path(name);
    assert!(path.exists(), "{} is not built", path.display());
    let mut child = Command::new(&path)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.split("http://").nth(1) {
                let addr = rest.split([',', '/', ' ']).next();
                return addr.and_then(|addr| addr.parse().ok()).expect("an address");
            }
        }
        panic!("{name} exited before listening");
    })
    .await
    .expect("the example listens");
    // Keep reading what it prints, so a full pipe never blocks it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Example { child, addr }
}

impl Example {
    /// Sends SIGINT, as Ctrl-C does, and returns how long the process took to exit.
    async fn interrupt(&mut self) -> Duration {
        let pid = self.child.id().expect("running").to_string();
        let sent = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the example exits after SIGINT")
            .expect("wait");
        sent.elapsed()
    }
}

/// Writes `request` on a new connection and reads until `done` holds, the peer closes, or
/// `limit` passes.
async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    read_until(&mut tcp, limit, done).await
}

async fn read_until(tcp: &mut TcpStream, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !done(&String::from_utf8_lossy(&seen)) {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn subscription(path: &str, last_event_id: Option<&str>) -> Vec<u8> {
    let last = last_event_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n{last}connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Whether a chunked response has ended (its last chunk came).
fn ended(response: &str) -> bool {
    response.ends_with("0\r\n\r\n")
}

#[tokio::test]
async fn the_demo_resumes_after_any_id_a_client_sends() {
    let demo = start("demo", &[], &[("DEMO_ADDR", "127.0.0.1:0")]).await;
    let max = u64::MAX.to_string();
    // The last tick there is: it comes, then the stream ends cleanly.
    let before_max = (u64::MAX - 1).to_string();
    let response = exchange(
        demo.addr,
        &subscription("/ticks", Some(&before_max)),
        Duration::from_secs(5),
        ended,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&format!("data: tick {max}\n")),
        "{response}"
    );
    assert!(ended(&response), "{response}");
    // Past the last tick, not a number, negative, too long: a fresh start, never a panic.
    for id in [max.as_str(), "x", "-1", "99999999999999999999999"] {
        let response = exchange(
            demo.addr,
            &subscription("/ticks", Some(id)),
            Duration::from_secs(5),
            |seen| seen.contains("id: 1\n"),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{id}: {response}");
        assert!(response.contains("data: tick 1\n"), "{id}: {response}");
    }
    // An ordinary resume.
    let response = exchange(
        demo.addr,
        &subscription("/ticks", Some("41")),
        Duration::from_secs(5),
        |seen| seen.contains("id: 42\n"),
    )
    .await;
    assert!(response.contains("data: tick 42\n"), "{response}");
}

#[tokio::test]
async fn the_demo_exits_within_seconds_of_sigint_whatever_its_clients_hold_open() {
    let mut demo = start("demo", &[], &[("DEMO_ADDR", "127.0.0.1:0")]).await;
    let addr = demo.addr;
    // A plain GET (what curl and a browser tab send) gets the raw lines, untouched.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /ticks HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let seen = read_until(&mut plain, Duration::from_secs(5), |s| s.contains("1\n")).await;
    assert!(seen.contains("application/x-ndjson"), "{seen}");
    // An event stream.
    let mut events = TcpStream::connect(addr).await.expect("connect");
    events
        .write_all(&subscription("/ticks", None))
        .await
        .expect("write");
    let seen = read_until(&mut events, Duration::from_secs(5), |s| {
        s.contains("id: 1\n")
    })
    .await;
    assert!(seen.contains("data: tick 1"), "{seen}");
    // Half a request head, never finished.
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /ticks HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let took = demo.interrupt().await;
    // The drain is bounded at 3 s (`examples/serve/mod.rs`); allow for a loaded machine.
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGINT"
    );
    let rest = read_until(&mut events, Duration::from_secs(2), ended).await;
    assert!(
        rest.contains("event: bye\ndata: server restarting\n\n"),
        "{rest}"
    );
    assert!(ended(&rest), "the event stream ends cleanly: {rest}");
    let rest = read_until(&mut plain, Duration::from_secs(2), ended).await;
    assert!(ended(&rest), "the plain stream ends cleanly: {rest}");
}

/// Connections that send half a head, or nothing, are closed after the head timeout.
async fn half_heads_are_closed(addr: SocketAddr) {
    let opened = Instant::now();
    let mut closes = Vec::new();
    for n in 0..50 {
        let head: &[u8] = match n % 4 {
            0 => b"GET /ticks HTTP/1.1\r\nhost: x\r\n",
            1 => b"GET /tic",
            2 => b"PRI * HTTP/2.0\r\n",
            _ => b"",
        };
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(head).await.expect("write");
        closes.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            // Whatever the server says (a 408, or nothing), the connection must end.
            loop {
                match timeout(HEADER_READ_TIMEOUT * 2, tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        }));
    }
    for close in closes {
        assert!(close.await.expect("join"), "a half-sent head was held open");
    }
    let took = opened.elapsed();
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_secs(1)
            && took < HEADER_READ_TIMEOUT + Duration::from_secs(5),
        "closed after {took:?}"
    );
}

/// A raw upstream: answers every request with `answer`, and reports each request line.
#[cfg(feature = "gateway")]
async fn upstream(
    answer: &'static [u8],
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let head =
                    read_until(&mut tcp, Duration::from_secs(5), |s| s.contains("\r\n\r\n")).await;
                let _ = tx.send(head.lines().next().unwrap_or_default().to_owned());
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn the_demo_and_the_gateway_close_half_sent_heads() {
    let demo = start("demo", &[], &[("DEMO_ADDR", "127.0.0.1:0")]).await;
    #[cfg(feature = "gateway")]
    {
        let (up, _) = upstream(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let upstream_uri = format!("http://{up}");
        let gateway = start(
            "gateway",
            &["--listen", "127.0.0.1:0", "--upstream", &upstream_uri],
            &[],
        )
        .await;
        tokio::join!(
            half_heads_are_closed(demo.addr),
            half_heads_are_closed(gateway.addr)
        );
    }
    #[cfg(not(feature = "gateway"))]
    half_heads_are_closed(demo.addr).await;
}

#[cfg(feature = "gateway")]
#[tokio::test]
async fn the_gateway_never_forwards_a_path_out_of_its_prefix() {
    let (up, mut received) =
        upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n").await;
    let upstream_uri = format!("http://{up}/api");
    let gateway = start(
        "gateway",
        &["--listen", "127.0.0.1:0", "--upstream", &upstream_uri],
        &[],
    )
    .await;
    let request = |method: &str, target: &str| {
        format!("{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
    };
    for path in [
        "/../admin",
        "/..;/admin",
        "/..%2f..%2fadmin",
        "/%5c..%5c..%5cadmin",
        "/\\..\\..\\admin",
        "/%252e%252e/admin",
        "/%2e%2e;/admin",
    ] {
        let response = exchange(
            gateway.addr,
            &request("GET", path),
            Duration::from_secs(5),
            |_| false,
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
    }
    let response = exchange(
        gateway.addr,
        &request("GET", "*"),
        Duration::from_secs(5),
        |_| false,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "GET *: {response}");
    let response = exchange(
        gateway.addr,
        &request("OPTIONS", "*"),
        Duration::from_secs(5),
        |_| false,
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 204"),
        "OPTIONS *: {response}"
    );
    // An ordinary path, encoded characters and all, is forwarded byte for byte.
    let response = exchange(
        gateway.addr,
        &request("GET", "/a%2e%2eb/%41;x=1"),
        Duration::from_secs(5),
        |_| false,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        received.recv().await.as_deref(),
        Some("GET /api/a%2e%2eb/%41;x=1 HTTP/1.1")
    );
    // Nothing else reached the upstream (each request line is reported before its answer).
    assert_eq!(received.try_recv().ok(), None);
}

#[cfg(feature = "gateway")]
#[tokio::test]
async fn the_gateway_answers_an_unasked_101_with_502_and_writes_one_retry_hint() {
    let (switching, _) = upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let upstream_uri = format!("http://{switching}");
    let gateway = start(
        "gateway",
        &["--listen", "127.0.0.1:0", "--upstream", &upstream_uri],
        &[],
    )
    .await;
    for request in [
        &b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"[..],
        &subscription("/ws", None),
    ] {
        let response = exchange(gateway.addr, request, Duration::from_secs(5), |_| false).await;
        assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    }

    // An upstream event stream that opens with the same retry hint as the gateway's.
    let (sse, _) = upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nretry: 3000\n\ndata: x\n\n",
    )
    .await;
    let upstream_uri = format!("http://{sse}");
    let gateway = start(
        "gateway",
        &["--listen", "127.0.0.1:0", "--upstream", &upstream_uri],
        &[],
    )
    .await;
    let response = exchange(
        gateway.addr,
        &subscription("/events", None),
        Duration::from_secs(5),
        ended,
    )
    .await;
    assert_eq!(response.matches("retry: 3000").count(), 1, "{response}");
    assert!(response.contains("data: x\n\n"), "{response}");
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn the_grpc_example_answers_client_errors_with_4xx_and_any_id_without_panicking() {
    use base64::Engine;
    let grpc = start("grpc", &[], &[("GRPC_ADDR", "127.0.0.1:0")]).await;
    let addr = grpc.addr;
    // `SubscribeRequest { from }`: field 1, a varint.
    let message = |from: u64| {
        let mut bytes = vec![0x08];
        let mut n = from;
        while n > 127 {
            bytes.push((n as u8 & 127) | 128);
            n >>= 7;
        }
        bytes.push(n as u8);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let path = |from: u64| format!("/feed.Ticker/Subscribe?message={}", message(from));
    for method in ["HEAD", "OPTIONS"] {
        let request = format!(
            "{method} {} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n",
            path(5)
        );
        let response = exchange(addr, request.as_bytes(), Duration::from_secs(5), |_| false).await;
        assert!(response.starts_with("HTTP/1.1 405"), "{method}: {response}");
    }
    // Not a `SubscribeRequest` (a varint cut short), and not base64url.
    for query in ["_w", "!!"] {
        let target = format!("/feed.Ticker/Subscribe?message={query}");
        let response = exchange(
            addr,
            &subscription(&target, None),
            Duration::from_secs(5),
            |_| false,
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{query}: {response}");
    }
    // From the last ticks there are: they come, then a clean end.
    let max = u64::MAX;
    let response = exchange(
        addr,
        &subscription(&path(max), None),
        Duration::from_secs(5),
        ended,
    )
    .await;
    assert!(response.contains(&format!("id: {max}\n")), "{response}");
    assert!(ended(&response), "{response}");
    let response = exchange(
        addr,
        &subscription(&path(max - 1), None),
        Duration::from_secs(6),
        ended,
    )
    .await;
    assert!(
        response.contains(&format!("id: {}\n", max - 1)),
        "{response}"
    );
    assert!(response.contains(&format!("id: {max}\n")), "{response}");
    assert!(ended(&response), "{response}");
    // A resume after the last tick, or after an id that is not a tick, starts from `from`.
    for id in [max.to_string().as_str(), "abc"] {
        let response = exchange(
            addr,
            &subscription(&path(5), Some(id)),
            Duration::from_secs(5),
            |seen| seen.contains("id: 5\n"),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{id}: {response}");
        assert!(response.contains("id: 5\n"), "{id}: {response}");
    }
}

/// The metrics example: a stream shows up on `/metrics` under its route, and a fifth stream
/// from one address is refused politely and counted.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn the_metrics_example_exports_streams_and_refusals_for_prometheus() {
    let example = start("metrics", &["--listen", "127.0.0.1:0"], &[]).await;
    let addr = example.addr;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&subscription("/ticks", None))
            .await
            .expect("write");
        let seen = read_until(&mut tcp, Duration::from_secs(10), |s| s.contains("tick 1")).await;
        assert!(seen.contains("data: tick 1"), "{seen}");
        streams.push(tcp);
    }
    let fifth = exchange(
        addr,
        &subscription("/ticks", None),
        Duration::from_secs(10),
        ended,
    )
    .await;
    assert!(fifth.starts_with("HTTP/1.1 200"), "{fifth}");
    assert!(fifth.contains("retry: 1"), "a hint of 10-20 s: {fifth}");
    assert!(!fifth.contains("tick"), "{fifth}");
    let scrape = b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let metrics = exchange(addr, scrape, Duration::from_secs(10), |_| false).await;
    for line in [
        "sse_streams_open{route=\"/ticks\"} 4",
        "sse_streams_opened_total{route=\"/ticks\"} 4",
        "sse_streams_refused_total{limit=\"per_key\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    drop(streams);
    let closed = "sse_streams_closed_total{route=\"/ticks\",reason=\"client_gone\"} 4";
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = exchange(addr, scrape, Duration::from_secs(10), |_| false).await;
        if metrics.contains(closed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(closed), "{closed} in {metrics}");
    assert!(
        metrics.contains("sse_streams_open{route=\"/ticks\"} 0"),
        "{metrics}"
    );
}

/// The hub example's subscription fetched as curl, `fetch` or htmx fetch it (no `Accept:
/// text/event-stream`): the layer's retry hint (1 s, not the hub's default), and on SIGINT the
/// shutdown event and a clean end, with the process gone within the drain bound.
#[cfg(feature = "hub")]
#[tokio::test]
async fn the_hub_example_serves_a_plain_get_of_a_subscription_through_its_layer() {
    let mut hub = start("hub", &["--listen", "127.0.0.1:0"], &[]).await;
    let mut plain = TcpStream::connect(hub.addr).await.expect("connect");
    plain
        .write_all(
            b"GET /events/board HTTP/1.1\r\nhost: x\r\naccept: */*\r\nauthorization: Bearer open-sesame\r\n\r\n",
        )
        .await
        .expect("write");
    let seen = read_until(&mut plain, Duration::from_secs(5), |s| {
        s.contains("retry: ")
    })
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let seen = seen + &read_until(&mut plain, Duration::from_millis(300), |_| false).await;
    assert!(seen.contains("retry: 1000\n"), "the layer's hint: {seen}");
    let took = hub.interrupt().await;
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGINT"
    );
    let rest = read_until(&mut plain, Duration::from_secs(2), ended).await;
    assert!(
        rest.contains("event: bye\ndata: server restarting\n\n"),
        "the shutdown event: {rest}"
    );
    assert!(ended(&rest), "the stream ends cleanly: {rest}");
}

#[tokio::test]
async fn the_demo_compresses_for_curl_compressed_and_not_for_plain_curl() {
    if !support::curl_available() {
        return;
    }
    let demo = start("demo", &[], &[("DEMO_ADDR", "127.0.0.1:0")]).await;
    let url = format!("http://{}/ticks", demo.addr);
    for (compressed, encoding) in [(true, Some("zstd")), (false, None)] {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-sN", "-D", "-", "--max-time", "2"])
            .args(["-H", "accept: text/event-stream"]);
        if compressed {
            curl.arg("--compressed");
        }
        let output = curl.arg(&url).kill_on_drop(true).output().await;
        let output = output.map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
        let Ok(output) = output else {
            panic!("curl did not run");
        };
        let head = output.to_ascii_lowercase();
        // curl asks for deflate, gzip, br and zstd; the demo prefers zstd.
        match encoding {
            Some(coding) => assert!(
                head.contains(&format!("content-encoding: {coding}\r\n")),
                "{output}"
            ),
            None => assert!(!head.contains("content-encoding"), "{output}"),
        }
        assert!(
            head.contains("vary: accept, accept-encoding\r\n")
                || head.contains("vary: accept-encoding"),
            "{output}"
        );
        // Decoded by curl as it arrives: the first tick within the 2 s.
        assert!(
            output.contains("event: tick\ndata: tick 1\nid: 1\n\n"),
            "{output}"
        );
    }
}
