//! HTTP timeouts and limits (issue #11), against the spawned `sconce` binary on loopback:
//! slowloris sockets are closed within the header timeout while `/health` answers; idle
//! connections, slow bodies, clients that stop reading a stream and requests over the cap are
//! all bounded.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "one_path/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Server, MODEL};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn address(server: &Server) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// Sends a partial request head, then one more header line every 300 ms; returns how long
/// after connecting the server closed the socket (`None`: still open after `give_up`).
async fn slowloris(addr: std::net::SocketAddr, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr).await.ok()?;
    socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.ok()?;
    let mut buf = [0u8; 256];
    while started.elapsed() < give_up {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {} // a 408 before the close
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                if socket.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

/// Seconds after connecting that the server closed a socket that never sent a byte.
async fn silent_socket_closed_after(addr: std::net::SocketAddr, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(give_up, socket.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_sockets_are_closed_within_the_header_timeout_while_health_answers() {
    let config = "[server]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\nbody_read_timeout_secs = 1\n";
    let server = Server::start(|_| config.to_string(), &[]).await;
    let addr = address(&server);
    let give_up = Duration::from_secs(8);
    let sockets: Vec<_> = (0..500).map(|_| tokio::spawn(slowloris(addr, give_up))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let health = server.client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?} beside 500 slowloris sockets",
        started.elapsed()
    );
    let mut closed_after = Vec::new();
    for socket in sockets {
        closed_after.push(socket.await.unwrap());
    }
    let open = closed_after.iter().filter(|closed| closed.is_none()).count();
    assert_eq!(open, 0, "{open} of 500 slowloris sockets still open after {give_up:?}");
    let slowest = closed_after.iter().flatten().max().unwrap();
    // The 2 s header timeout, plus a generous margin for 500 sockets on a busy machine.
    assert!(*slowest < Duration::from_secs(5), "the slowest socket closed after {slowest:?}");

    // A connection that sends nothing is idle: closed after the idle timeout, not before.
    let idle = silent_socket_closed_after(addr, Duration::from_secs(10)).await.expect("an idle socket is closed");
    assert!(idle >= Duration::from_millis(2900) && idle < Duration::from_secs(7), "closed after {idle:?}");

    // A body that stops arriving: 408 after the body timeout.
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(6), socket.read(&mut reply)).await;
    let n = read.expect("a slow body is answered").unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
}

/// The `sconce:` value of a gauge on `/metrics`.
async fn gauge(server: &Server, name: &str) -> f64 {
    let text = server.metrics().await;
    let line = text.lines().find(|line| line.starts_with(&format!("sconce:{name}{{"))).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A streaming request from a socket with a small receive buffer that then reads nothing.
async fn stalled_stream(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = json!({"model": MODEL, "prompt": "go on", "n": 16, "max_tokens": 480, "ignore_eos": true,
                      "logprobs": 20, "stream": true})
    .to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_aborted_and_its_kv_freed() {
    // 50 ms a step: the request would generate for 24 s or more if it were not aborted.
    // A 64 KiB send buffer: the kernel's autotuned one holds several MiB before a write waits.
    let config = "[server]\nstream_send_timeout_secs = 1\nsend_buffer_bytes = \"64KiB\"\n";
    let server = Server::start(|_| config.to_string(), &[("SCONCE_FAULT_INJECT", "step_delay_ms:50")]).await;
    let stalled = stalled_stream(address(&server)).await;
    let started = Instant::now();
    while gauge(&server, "kv_cache_usage_perc").await == 0.0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the request never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while gauge(&server, "kv_cache_usage_perc").await > 0.0 || gauge(&server, "num_requests_running").await > 0.0 {
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(15), "KV still held {waited:?} after the client stopped reading");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

#[tokio::test]
async fn requests_over_the_concurrency_cap_get_503_and_probes_still_answer() {
    let config = "[server]\nmax_concurrent_requests = 2\n";
    let server = Server::start(|_| config.to_string(), &[("SCONCE_FAULT_INJECT", "step_delay_ms:20")]).await;
    let long = json!({"model": MODEL, "prompt": "go on", "max_tokens": 200, "ignore_eos": true, "stream": true});
    let mut held = Vec::new();
    for _ in 0..2 {
        let response = server.client.post(server.url("/v1/completions")).json(&long).send().await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    let refused = server.client.post(server.url("/v1/completions")).json(&long).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    common::assert_envelope(&body);
    assert_eq!(server.client.get(server.url("/health")).send().await.unwrap().status(), 200);
    drop(held);
    // The places free up once the streams are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let short = json!({"model": MODEL, "prompt": "hi", "max_tokens": 2});
        let status = server.client.post(server.url("/v1/completions")).json(&short).send().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused ({status}) after the streams closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
