//! On-the-fly compression of proxied responses (`compress = true` on a
//! route), through Pingora's downstream compression module. The module
//! runs on every response, so the edge turns it on per request, only where
//! it is safe: a proxied answer on a compressing route, never a stream.

use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::proxy::Session;

/// One level for gzip, brotli and zstd: brotli 5 and gzip 5 are close to
/// their best ratio per CPU second for text.
pub const LEVEL: u32 = 5;

/// Registers the module at [`LEVEL`], so it reads `Accept-Encoding` as the
/// request arrives; [`set`] decides per request whether it compresses.
pub fn install(modules: &mut HttpModules) {
    modules.add_module(ResponseCompressionBuilder::enable(LEVEL));
}

/// Whether a request's response may be compressed: the route asks for it,
/// and the request opens no stream (a websocket, or an `EventSource`, whose
/// events would wait in the compressor's buffer).
pub fn wanted(route_compresses: bool, upgrade: bool, event_stream: bool) -> bool {
    route_compresses && !upgrade && !event_stream
}

/// Turns the module on or off for this request's response; a no-op once
/// the response header is written (the module's phase cannot change then).
pub fn set(session: &mut Session, on: bool) {
    if session.response_written().is_some() {
        return;
    }
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
        && c.is_header_phase()
    {
        c.adjust_level(if on { LEVEL } else { 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_for_streams() {
        assert!(wanted(true, false, false));
        assert!(!wanted(false, false, false));
        assert!(!wanted(true, true, false));
        assert!(!wanted(true, false, true));
    }
}
