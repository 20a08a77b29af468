//! Static files (`kind = "static"`), so one binary replaces the SkyOffice
//! image's nginx too: a Vite build served with the caching, precompression
//! and range support nginx gives it, and no way out of its root.
//!
//! [`plan`] decides the whole answer from the request's headers and the
//! file system (tested without a socket); [`serve`] runs it on a blocking
//! thread and streams the file.

pub mod negotiate;
pub mod resolve;
pub mod validators;

use crate::reply::Reply;
use crate::reply::headers::{self, SecurityHeaders};
use bytes::BytesMut;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use resolve::Miss;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The file a directory path answers with.
pub const INDEX: &str = "index.html";

/// How much of a file is read and written at a time.
const CHUNK: usize = 64 * 1024;

/// A static route's settings.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// The directory served.
    pub root: &'a Path,
    /// Answer extension-less misses with the root's `index.html`.
    pub spa: bool,
    /// The route's CSP and HSTS, as on a proxied response.
    pub security: SecurityHeaders<'a>,
}

/// What [`plan`] needs of the request: owned, so it can go to a blocking thread.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// The normalised request path and its query, for a redirect to the
    /// directory's slash (never the raw target: `//host` must not become a
    /// `Location`).
    pub path: String,
    /// The query, carried over by that redirect.
    pub query: Option<String>,
    /// `HEAD`: the same header, no body.
    pub head: bool,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<String>,
    /// `If-None-Match`.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// `Range`.
    pub range: Option<String>,
    /// `If-Range`.
    pub if_range: Option<String>,
}

impl Ask {
    /// The parts of `req` that decide a static answer; `path` is the
    /// normalised path.
    pub fn of(req: &RequestHeader, path: &str) -> Self {
        let get = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            path: path.to_string(),
            query: req.uri.query().map(str::to_string),
            head: req.method == http::Method::HEAD,
            accept_encoding: get(http::header::ACCEPT_ENCODING),
            if_none_match: get(http::header::IF_NONE_MATCH),
            if_modified_since: get(http::header::IF_MODIFIED_SINCE),
            range: get(http::header::RANGE),
            if_range: get(http::header::IF_RANGE),
        }
    }
}

/// A decided answer: the status and headers, and the bytes of the file to send.
#[derive(Debug)]
pub struct Plan {
    /// 200, 206 or 304.
    pub status: u16,
    /// Everything but the security headers.
    pub headers: Vec<(http::header::HeaderName, String)>,
    /// What to send after the header (`None` for 304 and HEAD).
    pub body: Option<Body>,
}

/// A byte range of an open file.
#[derive(Debug)]
pub struct Body {
    /// The open representation.
    pub file: File,
    /// First byte.
    pub start: u64,
    /// How many bytes.
    pub len: u64,
}

/// Decides the answer to `ask` for `rel` (the path under the route). `Err`
/// is the error reply to send instead (404, 416, 503).
pub fn plan(root: &Path, spa: bool, rel: &str, ask: &Ask, json: bool) -> Result<Plan, Box<Reply>> {
    use http::header as h;
    let found = match resolve::resolve(root, rel, spa, INDEX) {
        Ok(f) => f,
        Err(Miss::NeedsSlash) => {
            let q = ask
                .query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            return Err(Box::new(Reply::redirect(301, format!("{}/{q}", ask.path))));
        }
        Err(m) => return Err(Box::new(miss(m, rel, json))),
    };
    let name = found
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let content_type = content_type(&found.path);
    // The stored representations of the file: itself, and the siblings a build compressed.
    let siblings: Vec<(negotiate::Encoding, PathBuf, std::fs::Metadata)> =
        [negotiate::Encoding::Brotli, negotiate::Encoding::Gzip]
            .into_iter()
            .filter_map(|e| sibling(&found.root, &found.path, e).map(|(p, m)| (e, p, m)))
            .collect();
    // Ranges count bytes of the plain file: a client resuming a download
    // must not get offsets into a compressed copy.
    let chosen = match &ask.range {
        Some(_) => None,
        None => negotiate::preferred(ask.accept_encoding.as_deref())
            .into_iter()
            .find_map(|want| siblings.iter().find(|(e, ..)| *e == want)),
    };
    let (path, meta, encoding) = match chosen {
        Some((e, p, m)) => (p.clone(), m.clone(), Some(e.token())),
        None => (found.path.clone(), found.meta.clone(), None),
    };
    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    let len = meta.len();
    let etag = validators::etag(len, modified, encoding);
    let mut headers = vec![
        (h::ETAG, etag.clone()),
        (h::LAST_MODIFIED, validators::last_modified(modified)),
        (
            h::CACHE_CONTROL,
            if found.fallback {
                "no-cache"
            } else {
                validators::cache_control(&name)
            }
            .to_string(),
        ),
        (h::ACCEPT_RANGES, "bytes".to_string()),
    ];
    if !siblings.is_empty() {
        headers.push((h::VARY, "Accept-Encoding".to_string()));
    }
    if validators::not_modified(
        ask.if_none_match.as_deref(),
        ask.if_modified_since.as_deref(),
        &etag,
        modified,
    ) {
        return Ok(Plan {
            status: 304,
            headers,
            body: None,
        });
    }
    headers.push((h::CONTENT_TYPE, content_type));
    if let Some(e) = encoding {
        headers.push((h::CONTENT_ENCODING, e.to_string()));
    }
    let (status, start, count) = match ask
        .range
        .as_deref()
        .filter(|_| validators::range_applies(ask.if_range.as_deref(), &etag, modified))
        .map(|r| http_range_header::parse_range_header(r).and_then(|p| p.validate(len)))
    {
        // One satisfiable range: 206. Several: the whole file (a server may
        // ignore Range, RFC 9110 §14.2; multipart answers are rarely asked for).
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (a, b) = (*ranges[0].start(), *ranges[0].end());
            headers.push((h::CONTENT_RANGE, format!("bytes {a}-{b}/{len}")));
            (206, a, b - a + 1)
        }
        Some(Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable)) => {
            let mut r = Reply::error(416, "range not satisfiable", json);
            r.headers.push(("content-range", format!("bytes */{len}")));
            return Err(Box::new(r));
        }
        // A malformed or abusive Range is ignored (RFC 9110 §14.2).
        _ => (200, 0, len),
    };
    headers.push((h::CONTENT_LENGTH, count.to_string()));
    let body = if ask.head || count == 0 {
        None
    } else {
        let file = File::open(&path).map_err(|e| {
            tracing::warn!(target: "static", file = %path.display(), error = %e, "cannot open a static file");
            Box::new(Reply::error(404, "no such file", json))
        })?;
        Some(Body {
            file,
            start,
            len: count,
        })
    };
    Ok(Plan {
        status,
        headers,
        body,
    })
}

/// Serves `rel` (the part of the normalised `path` under the route) from
/// `site`; `Ok(Some(reply))` is an error or redirect for the edge to send.
pub async fn serve(
    session: &mut Session,
    site: &Site<'_>,
    rel: &str,
    path: &str,
    json: bool,
) -> pingora::Result<Option<Reply>> {
    let req = session.req_header();
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        let mut r = Reply::error(405, "static files answer GET and HEAD only", json);
        r.allow = Some("GET, HEAD");
        return Ok(Some(r));
    }
    let ask = Ask::of(req, path);
    let (root, spa, rel_owned) = (site.root.to_path_buf(), site.spa, rel.to_string());
    let planned = tokio::task::spawn_blocking(move || plan(&root, spa, &rel_owned, &ask, json))
        .await
        .map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "static file task", e)
        })?;
    let plan = match planned {
        Ok(p) => p,
        Err(reply) => return Ok(Some(*reply)),
    };
    let mut resp = ResponseHeader::build(plan.status, Some(plan.headers.len() + 6))?;
    for (name, value) in plan.headers {
        resp.insert_header(name, value)?;
    }
    headers::apply(&mut resp, &site.security)?;
    let Some(body) = plan.body else {
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(None);
    };
    session.write_response_header(Box::new(resp), false).await?;
    send_file(session, body).await?;
    Ok(None)
}

/// Streams `body` in chunks read on a blocking thread; the file is the
/// one `plan` opened, so a deploy that replaces it mid-way cannot mix two
/// versions into one answer.
async fn send_file(session: &mut Session, body: Body) -> pingora::Result<()> {
    let Body {
        mut file,
        start,
        len,
    } = body;
    let mut left = len;
    let mut first = true;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let seek = first.then_some(start);
        first = false;
        let (f, chunk) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(File, BytesMut)> {
                if let Some(at) = seek {
                    file.seek(SeekFrom::Start(at))?;
                }
                let mut buf = BytesMut::zeroed(want);
                let mut got = 0;
                while got < want {
                    match file.read(&mut buf[got..])? {
                        0 => break,
                        n => got += n,
                    }
                }
                buf.truncate(got);
                Ok((file, buf))
            })
            .await
            .map_err(|e| {
                pingora::Error::because(pingora::ErrorType::InternalError, "static file task", e)
            })?
            .map_err(|e| {
                pingora::Error::because(pingora::ErrorType::ReadError, "reading a static file", e)
            })?;
        file = f;
        if chunk.is_empty() {
            // The file shrank under us: the promised length cannot be kept.
            return pingora::Error::e_explain(
                pingora::ErrorType::ReadError,
                "static file shrank while sent",
            );
        }
        left -= chunk.len() as u64;
        session
            .write_response_body(Some(chunk.freeze()), left == 0)
            .await?;
    }
    Ok(())
}

/// The representation `e` of `file`, when the build wrote one beside it
/// (and it stays inside the canonical `root`).
fn sibling(
    root: &Path,
    file: &Path,
    e: negotiate::Encoding,
) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut name = file.file_name()?.to_os_string();
    name.push(e.suffix());
    let path = file.with_file_name(name).canonicalize().ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    (path.starts_with(root) && meta.is_file()).then_some((path, meta))
}

/// `Content-Type` by extension; text gets its charset (Vite writes UTF-8).
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "javascript" | "json" | "xml" | "svg+xml"
        )
        || mime.suffix().is_some_and(|s| s == "json" || s == "xml");
    if text && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

fn miss(m: Miss, rel: &str, json: bool) -> Reply {
    match m {
        Miss::NotFound => Reply::error(404, "no such file", json),
        Miss::Escapes => {
            tracing::warn!(target: "static", path = rel, "refused: a symlink leads out of the static root");
            Reply::error(404, "no such file", json)
        }
        Miss::NeedsSlash => Reply::redirect(301, format!("{rel}/")),
        Miss::Root(why) => {
            tracing::error!(target: "static", error = %why, "the static root is gone or unreadable");
            Reply::error(503, "static files unavailable", json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("assets")).unwrap();
        fs::write(d.path().join("index.html"), "<h1>app</h1>").unwrap();
        fs::write(d.path().join("assets/app-3f9aB1c2.js"), "console.log(1)").unwrap();
        fs::write(d.path().join("assets/app-3f9aB1c2.js.br"), "BR").unwrap();
        fs::write(d.path().join("assets/app-3f9aB1c2.js.gz"), "GZ").unwrap();
        fs::write(d.path().join("data.bin"), vec![7u8; 1000]).unwrap();
        d
    }

    fn header<'a>(p: &'a Plan, name: &str) -> Option<&'a str> {
        p.headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_str())
    }

    fn ask(f: impl FnOnce(&mut Ask)) -> Ask {
        let mut a = Ask::default();
        f(&mut a);
        a
    }

    #[test]
    fn precompressed_sibling_by_accept_encoding() {
        let d = root();
        let js = "/assets/app-3f9aB1c2.js";
        let br = plan(
            d.path(),
            true,
            js,
            &ask(|a| a.accept_encoding = Some("gzip, br".into())),
            false,
        )
        .unwrap();
        assert_eq!(header(&br, "content-encoding"), Some("br"));
        assert_eq!(header(&br, "content-length"), Some("2"));
        assert_eq!(
            header(&br, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(header(&br, "vary"), Some("Accept-Encoding"));
        assert_eq!(
            header(&br, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let gz = plan(
            d.path(),
            true,
            js,
            &ask(|a| a.accept_encoding = Some("gzip".into())),
            false,
        )
        .unwrap();
        assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
        let plain = plan(d.path(), true, js, &Ask::default(), false).unwrap();
        assert_eq!(header(&plain, "content-encoding"), None);
        assert_eq!(header(&plain, "content-length"), Some("14"));
        assert_ne!(header(&plain, "etag"), header(&br, "etag"));
    }

    #[test]
    fn index_is_revalidated_and_304_when_current() {
        let d = root();
        let first = plan(d.path(), true, "/", &Ask::default(), false).unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(header(&first, "cache-control"), Some("no-cache"));
        assert_eq!(
            header(&first, "content-type"),
            Some("text/html; charset=utf-8")
        );
        let tag = header(&first, "etag").unwrap().to_string();
        let again = plan(
            d.path(),
            true,
            "/",
            &ask(|a| a.if_none_match = Some(tag)),
            false,
        )
        .unwrap();
        assert_eq!(again.status, 304);
        assert!(again.body.is_none());
        // A deep link of the app gets the index, never cached as itself.
        let deep = plan(d.path(), true, "/rooms/7", &Ask::default(), false).unwrap();
        assert_eq!(deep.status, 200);
        assert_eq!(header(&deep, "cache-control"), Some("no-cache"));
    }

    #[test]
    fn ranges() {
        let d = root();
        let part = plan(
            d.path(),
            true,
            "/data.bin",
            &ask(|a| a.range = Some("bytes=10-19".into())),
            false,
        )
        .unwrap();
        assert_eq!(part.status, 206);
        assert_eq!(header(&part, "content-range"), Some("bytes 10-19/1000"));
        assert_eq!(header(&part, "content-length"), Some("10"));
        assert_eq!(part.body.as_ref().map(|b| (b.start, b.len)), Some((10, 10)));
        let tail = plan(
            d.path(),
            true,
            "/data.bin",
            &ask(|a| a.range = Some("bytes=-100".into())),
            false,
        )
        .unwrap();
        assert_eq!(header(&tail, "content-range"), Some("bytes 900-999/1000"));
        let err = plan(
            d.path(),
            true,
            "/data.bin",
            &ask(|a| a.range = Some("bytes=5000-".into())),
            false,
        )
        .unwrap_err();
        assert_eq!(err.status, 416);
        assert!(
            err.headers
                .iter()
                .any(|(n, v)| *n == "content-range" && v == "bytes */1000")
        );
        // Malformed, several, or a stale If-Range: the whole file.
        for (range, if_range) in [
            ("lines=1-2", None),
            ("bytes=0-1,5-6", None),
            ("bytes=0-1", Some("\"stale\"")),
        ] {
            let whole = plan(
                d.path(),
                true,
                "/data.bin",
                &ask(|a| {
                    a.range = Some(range.into());
                    a.if_range = if_range.map(str::to_string);
                }),
                false,
            )
            .unwrap();
            assert_eq!(whole.status, 200, "{range}");
            assert_eq!(header(&whole, "content-length"), Some("1000"));
        }
    }

    #[test]
    fn head_has_no_body_and_misses_are_errors() {
        let d = root();
        let head = plan(d.path(), true, "/data.bin", &ask(|a| a.head = true), false).unwrap();
        assert_eq!(header(&head, "content-length"), Some("1000"));
        assert!(head.body.is_none());
        assert_eq!(
            plan(d.path(), true, "/nope.js", &Ask::default(), false)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            plan(&d.path().join("gone"), true, "/", &Ask::default(), false)
                .unwrap_err()
                .status,
            503
        );
    }

    #[test]
    fn mime_types() {
        for (name, want) in [
            ("a.css", "text/css; charset=utf-8"),
            ("a.svg", "image/svg+xml; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.wasm", "application/wasm"),
            ("a.json", "application/json; charset=utf-8"),
            ("a.woff2", "font/woff2"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), want, "{name}");
        }
    }
}
