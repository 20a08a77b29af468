//! The built-in console (`kind = "console"`): a small page embedded in the
//! binary that lists the agents, runs one with a click, and shows each
//! agent's live status and log from `/api/stream` and its recent runs from
//! `/api/runs`. It is what a first run shows when nothing else of the stack
//! is running, and an operator's view of the hub afterwards. Four files,
//! no external asset, and a CSP that allows only them and same-origin fetches.

use crate::reply::Reply;
use crate::reply::handler::{Call, Handled, Handler};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::proxy::Session;

/// Only the console's own files and same-origin calls; no inline code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const ICON: &str = include_str!("assets/favicon.svg");

/// The console's files by the last segment of the path (so the route may
/// sit under any prefix that ends in `/`): content type and body.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path.rsplit('/').next().unwrap_or("") {
        "" | "index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "console.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "console.css" => Some(("text/css; charset=utf-8", STYLE)),
        "favicon.svg" => Some(("image/svg+xml", ICON)),
        _ => None,
    }
}

/// The answer for `method` and `path`.
pub fn answer(method: &http::Method, path: &str) -> Reply {
    if method != http::Method::GET && method != http::Method::HEAD {
        let mut r = Reply::error(405, "the console answers GET and HEAD", false);
        r.allow = Some("GET, HEAD");
        return r;
    }
    let Some((content_type, body)) = asset(path) else {
        return Reply::error(404, "no such console file", false);
    };
    let mut r = Reply::html(200, String::new(), "console");
    r.content_type = Some(content_type);
    r.body = Bytes::from_static(body.as_bytes());
    r.headers.push(("content-security-policy", CSP.to_string()));
    r
}

/// The console handler.
pub struct Console;

#[async_trait]
impl Handler for Console {
    fn claims(&self, _path: &str) -> bool {
        true
    }

    async fn serve(&self, session: &mut Session, call: Call<'_>) -> pingora::Result<Handled> {
        Ok(Handled::Reply(answer(
            &session.req_header().method,
            call.path,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_its_three_files_under_any_prefix() {
        let page = answer(&http::Method::GET, "/console/");
        assert_eq!(page.status, 200);
        assert_eq!(page.content_type, Some("text/html; charset=utf-8"));
        assert!(
            page.headers
                .iter()
                .any(|(n, v)| *n == "content-security-policy" && v == CSP)
        );
        let js = answer(&http::Method::GET, "/ops/console.js");
        assert_eq!(js.content_type, Some("text/javascript; charset=utf-8"));
        assert_eq!(
            answer(&http::Method::GET, "/console/console.css").status,
            200
        );
        assert_eq!(answer(&http::Method::GET, "/console/secret").status, 404);
        assert_eq!(answer(&http::Method::POST, "/console/").status, 405);
    }

    #[test]
    fn the_page_needs_no_inline_code_and_nothing_external() {
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("style="),
            "inline code would need 'unsafe-inline'"
        );
        for file in [INDEX, SCRIPT, STYLE] {
            // (The icon's only URL is its XML namespace.)
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "external asset"
            );
        }
        assert!(
            !SCRIPT.contains("innerHTML"),
            "events are shown as text only"
        );
    }
}
