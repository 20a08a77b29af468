//! `[admin]`: the metrics listener, which must not share an address with a
//! public listener.

use super::super::defaults as d;
use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::AdminSection;
use super::super::model::{Admin, Server, Tls};

pub(super) fn admin(
    a: AdminSection,
    server: &Server,
    tls: Option<&Tls>,
    env: &Overrides,
    p: &mut Problems,
) -> Admin {
    let key = env.label("admin.listen");
    let raw = a.listen.unwrap_or_else(|| d::ADMIN_LISTEN.to_string());
    if raw == "off" {
        return Admin { listen: None };
    }
    let listen = super::socket_addr(&raw, &key, p);
    let public = std::iter::once(server.listen).chain(tls.map(|t| t.listen));
    if listen.port() != 0 && public.into_iter().any(|l| l.port() == listen.port()) {
        p.add(
            key,
            format!(
                "{raw} is a public listener's port: metrics must stay on a listener of their own"
            ),
        );
    }
    Admin {
        listen: Some(listen),
    }
}
