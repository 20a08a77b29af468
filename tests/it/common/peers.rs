//! Real upstream peers: an HTTP echo server (hyper) with slow and SSE modes,
//! a websocket echo (tungstenite), and the node socket.io server.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;

/// A running peer; its accept loop ends with the test's runtime.
pub struct Peer {
    pub port: u16,
    /// Requests that reached the handler.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted (shows upstream keep-alive reuse).
    pub conns: Arc<AtomicUsize>,
    /// Non-empty request bodies received completely.
    pub bodies: Arc<AtomicUsize>,
    /// Websocket connections that ended (the edge closed its upstream side).
    pub closed: Arc<AtomicUsize>,
}

impl Peer {
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    pub fn bodies(&self) -> usize {
        self.bodies.load(Ordering::SeqCst)
    }
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Counts one ended connection when dropped, however its task ends.
struct Defer(Arc<AtomicUsize>);

impl Drop for Defer {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn query_param<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn handle(
    name: Arc<str>,
    bodies: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let q = req.uri().query().map(str::to_string);
    let q = q.as_deref();
    let mode = query_param(q, "mode").unwrap_or("echo");
    let ms: u64 = query_param(q, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    if mode == "sse" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(
                    b"id: 1\ndata: first\n\n",
                ))))
                .await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(
                    b"id: 2\ndata: second\n\n",
                ))))
                .await;
        });
        let stream = tokio_stream_from(rx);
        let body = BodyExt::boxed(StreamBody::new(stream));
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body)
            .expect("response"));
    }
    if mode == "slow" || mode == "drain" {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        // A cut-off body: answer nothing useful, count nothing.
        Err(_) => {
            return Ok(Response::builder()
                .status(400)
                .body(full("incomplete body"))
                .expect("response"));
        }
    };
    if !body.is_empty() {
        bodies.fetch_add(1, Ordering::SeqCst);
    }
    let json = serde_json::json!({
        "peer": &*name,
        "method": method,
        "target": target,
        "version": version,
        "headers": headers,
        "body_len": body.len(),
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::builder()
        .header("content-type", "application/json")
        .header("server", "echo-peer/1.0")
        .header("x-powered-by", "hyper");
    if mode == "csp" {
        resp = resp.header("content-security-policy", "script-src 'nonce-peer'");
    }
    if mode == "cookies" {
        // An app that tries to plant or clear the edge's own cookies.
        for c in [
            "app=kept; Path=/",
            "esprit_session=planted; Path=/",
            "__Host-esprit_session=planted; Path=/; Secure",
            "esprit_device=; Path=/auth/; Max-Age=0",
            "__Secure-esprit_device=planted; Path=/auth/; Secure",
        ] {
            resp = resp.header("set-cookie", c);
        }
    }
    Ok(resp.body(full(json.to_string())).expect("response"))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Starts the HTTP echo peer named `name` (the name comes back in every JSON answer).
/// Query `mode=slow&ms=N` delays the answer, `mode=sse` streams two events `ms` apart,
/// `mode=csp` sets the peer's own CSP, `mode=cookies` tries to set the edge's cookies.
pub async fn echo(name: &str) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(AtomicUsize::new(0));
    let name: Arc<str> = Arc::from(name);
    let (counter, conn_counter, body_counter) = (hits.clone(), conns.clone(), bodies.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conn_counter.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            let counter = counter.clone();
            let body_counter = body_counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    handle(name.clone(), body_counter.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Peer {
        port,
        hits,
        conns,
        bodies,
        closed: Arc::new(AtomicUsize::new(0)),
    }
}

/// Starts a websocket peer that runs `session` on every accepted websocket;
/// `hits` counts connections, `closed` the sessions that ended.
async fn ws_peer<F, Fut>(session: F) -> Peer
where
    F: Fn(WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (counter, ended) = (hits.clone(), closed.clone());
    let session = Arc::new(session);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let (session, ended) = (session.clone(), ended.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let _ended = Defer(ended);
                session(ws).await;
            });
        }
    });
    Peer {
        port,
        hits,
        conns: Arc::new(AtomicUsize::new(0)),
        bodies: Arc::new(AtomicUsize::new(0)),
        closed,
    }
}

/// Starts a websocket echo: every text or binary frame comes back unchanged.
pub async fn ws_echo() -> Peer {
    ws_peer(|mut ws| async move {
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A websocket that pushes a text frame every `every` without being asked, as
/// a server-push feed does while the browser stays silent.
pub async fn ws_ticker(every: Duration) -> Peer {
    ws_peer(move |mut ws| async move {
        let mut n = 0u32;
        loop {
            tokio::time::sleep(every).await;
            n += 1;
            let tick = tokio_tungstenite::tungstenite::Message::text(format!("tick {n}"));
            if ws.send(tick).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A Sim webhook stand-in: records every JSON body it is posted and answers
/// `status` after `delay`.
pub struct Hook {
    pub port: u16,
    pub received: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

pub async fn webhook(status: u16, delay: Duration) -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        store.lock().unwrap().push(v);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(full("{}"))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Hook { port, received }
}

/// A port with nothing listening: connections are refused.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", super::free_port())
}

/// The node socket.io 4 server (tests/peers), killed on drop.
pub struct SocketIo {
    pub port: u16,
    child: Child,
}

impl SocketIo {
    pub fn start() -> SocketIo {
        let dir = super::peers_dir();
        assert!(
            dir.join("node_modules/socket.io").exists(),
            "socket.io is not installed: run scripts/setup (npm ci --prefix tests/peers)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("socketio-server.js"))
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read ready line");
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("socket.io server said {line:?}"));
        SocketIo { port, child }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for SocketIo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the node socket.io client against `url`; returns its JSON report.
pub fn socketio_client(
    url: &str,
    transports: &str,
    mode: Option<&str>,
    cookie: Option<&str>,
) -> serde_json::Value {
    let dir = super::peers_dir();
    let mut cmd = Command::new("node");
    if let Some(c) = cookie {
        cmd.env("COOKIE", c);
    }
    cmd.arg(dir.join("socketio-client.js"))
        .arg(url)
        .arg(transports);
    if let Some(m) = mode {
        cmd.arg(m);
    }
    let out = cmd.output().expect("node client");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "socket.io client printed {text:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The `Sec-WebSocket-Key` a client must send to [`ws_eager`] (RFC 6455's sample).
pub const EAGER_WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A websocket upstream that writes its `101` the moment it accepts, before it
/// reads the request, then greets with `hello` and echoes. It makes the edge
/// read the `101` before it has drained the upgrade request's own (empty)
/// body: the ordering behind Pingora issue #946, which tore the tunnel down.
/// Clients must send [`EAGER_WS_KEY`].
pub async fn ws_eager() -> Peer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (counter, ended) = (hits.clone(), closed.clone());
    let accept = derive_accept_key(EAGER_WS_KEY.as_bytes());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let (accept, ended) = (accept.clone(), ended.clone());
            tokio::spawn(async move {
                let _ended = Defer(ended);
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                let end = loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let rest = request.split_off(end);
                let mut ws =
                    WebSocketStream::from_partially_read(stream, rest, Role::Server, None).await;
                if ws.send(Message::text("hello")).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Peer {
        port,
        hits,
        conns: Arc::new(AtomicUsize::new(0)),
        bodies: Arc::new(AtomicUsize::new(0)),
        closed,
    }
}
