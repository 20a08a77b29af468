//! The vendored Pingora patches, checked through Pingora's public API over a
//! real loopback socket (the vendored crates' own tests are not run here).
//! `vendor/pingora-core/PATCHES.md`: an HTTP/1 body buffer that starts at
//! 16 KiB and doubles each time a read fills it, up to 64 KiB.

use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KIB: usize = 1024;

/// The sizes of the chunks an upstream body arrives in, read by Pingora's
/// HTTP/1 client from a server that has already written `head` and `body`.
async fn chunks_of(head: String, body: Vec<u8>) -> Vec<usize> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        // Keep the connection open until the client is done.
        let _ = s.read(&mut req).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut session = HttpSession::new(Box::new(pingora::protocols::l4::stream::Stream::from(tcp)));
    let req = RequestHeader::build("GET", b"/", None).unwrap();
    session.write_request_header(Box::new(req)).await.unwrap();
    session.read_response().await.unwrap();
    // Let the whole body reach the socket buffer, so every read can fill its buffer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sizes = Vec::new();
    while let Some(chunk) = session.read_body_bytes().await.unwrap() {
        sizes.push(chunk.len());
        if session.is_body_done() {
            break;
        }
    }
    sizes
}

#[tokio::test]
async fn a_bulk_body_reads_grow_from_16_kib_to_64_kib() {
    let total = 512 * KIB;
    let sizes = chunks_of(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n"),
        vec![b'x'; total],
    )
    .await;
    assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
    // The first chunk is what came in with the head (Pingora's 4 KiB head
    // buffer); then the body buffer's own reads: 16 KiB first (unpatched
    // Pingora reads up to 64 KiB at once), then doubling as reads fill it.
    assert!(sizes[0] < 16 * KIB, "{sizes:?}");
    assert!(
        sizes[1] <= 16 * KIB,
        "the first body read was larger than 16 KiB: {sizes:?}"
    );
    assert!(
        sizes.contains(&(64 * KIB)),
        "the reads never grew to 64 KiB: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| n <= 64 * KIB), "{sizes:?}");
}

#[tokio::test]
async fn a_chunked_body_with_a_long_chunk_head_still_parses_at_the_initial_size() {
    // A chunk extension of 7 KiB (under Pingora's 8 KiB limit) makes the head
    // straddle the first 16 KiB read: the partial chunk head path.
    let filler = vec![b'a'; 16 * KIB - 100];
    let ext = "x".repeat(7 * KIB);
    let mut body = Vec::new();
    body.extend_from_slice(format!("{:x}\r\n", filler.len()).as_bytes());
    body.extend_from_slice(&filler);
    body.extend_from_slice(format!("\r\n10;ext={ext}\r\n").as_bytes());
    body.extend_from_slice(b"0123456789abcdef\r\n0\r\n\r\n");
    let sizes = chunks_of(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        body,
    )
    .await;
    assert_eq!(sizes.iter().sum::<usize>(), filler.len() + 16, "{sizes:?}");
}
