//! `[tls]`: the TLS listener and its certificate files.

use super::super::defaults as d;
use super::super::error::Problems;
use super::super::file::TlsSection;
use super::super::model::Tls;
use super::socket_addr;

pub(super) fn tls(t: TlsSection, p: &mut Problems) -> Tls {
    let listen = socket_addr(&t.listen, "tls.listen", p);
    for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
        if let Err(e) = std::fs::File::open(path) {
            p.add(key, format!("cannot read {}: {e}", path.display()));
        }
    }
    Tls {
        listen,
        cert: t.cert,
        key: t.key,
        hsts: t.hsts.unwrap_or(d::HSTS),
    }
}
