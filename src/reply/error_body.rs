//! Error bodies for answers the edge writes itself: JSON for APIs and
//! scripts, a small self-contained page for people.

use bytes::Bytes;

/// Whether the client should get JSON: API paths and clients that ask for it.
pub fn wants_json(path: &str, accept: Option<&str>) -> bool {
    if path.starts_with("/api/") || path == "/api" || path.starts_with("/auth/") {
        return true;
    }
    accept.is_some_and(|a| {
        let json = a.find("application/json");
        let html = a.find("text/html");
        match (json, html) {
            (Some(j), Some(h)) => j < h,
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// The body and its content type for `status` with `message`.
pub fn body(status: u16, message: &str, json: bool) -> (&'static str, Bytes) {
    if json {
        let v = serde_json::json!({ "error": message, "status": status });
        ("application/json", Bytes::from(v.to_string()))
    } else {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {reason}</title>\
             <style>body{{font:16px system-ui,sans-serif;margin:4rem auto;max-width:36rem;color:#222}}h1{{font-size:1.4rem}}</style>\
             </head><body><h1>{status} {reason}</h1><p>{}</p></body></html>\n",
            super::html::escape(message)
        );
        ("text/html; charset=utf-8", Bytes::from(html))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_html() {
        assert!(wants_json("/api/run/x", Some("text/html")));
        assert!(wants_json("/x", Some("application/json")));
        assert!(!wants_json("/x", Some("text/html,application/json;q=0.9")));
        assert!(!wants_json("/x", None));
        let (ct, b) = body(502, "upstream refused the connection", true);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "upstream refused the connection");
        let (ct, b) = body(504, "<x>", false);
        assert!(ct.starts_with("text/html"));
        assert!(
            std::str::from_utf8(&b)
                .unwrap()
                .contains("504 Gateway Timeout</h1><p>&lt;x&gt;")
        );
    }
}
