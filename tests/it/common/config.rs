//! A typed config for the suites: say which upstreams, routes and settings a
//! test needs, and [`ConfigBuilder::render`] writes the TOML text the edge
//! reads, with the generated `[server]` settings (free port, sockets and data
//! inside the test's temp dir).
//!
//! ```ignore
//! let config = ConfigBuilder::new()
//!     .hub("events_token", TOKEN)
//!     .upstream("app", app.address())
//!     .route(Route::prefix("/app/").upstream("app").session())
//!     .route(Route::prefix("/api/").hub().fallback("app"))
//!     .route(Route::prefix("/auth/").sign_in());
//! let edge = Edge::start(&config);
//! ```
//!
//! Tests whose point is the literal text (bad or unusual config) use
//! [`ConfigBuilder::raw`], which is written as it is.

use std::fmt::Write as _;
use std::path::Path;
use toml::Value;

/// The `key = value` lines of one table, in the order they were set.
#[derive(Clone, Default)]
struct Table(Vec<(String, Value)>);

impl Table {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.push((key.to_string(), value.into()));
    }

    fn write(&self, header: &str, out: &mut String) {
        writeln!(out, "{header}").expect("write");
        for (key, value) in &self.0 {
            writeln!(out, "{key} = {value}").expect("write");
        }
    }
}

/// One `[[routes]]` entry: `Route::prefix("/app/").upstream("app").session()`.
#[derive(Clone)]
pub struct Route(Table);

impl Route {
    /// A route matching the path prefix `prefix`.
    pub fn prefix(prefix: &str) -> Route {
        let mut t = Table::default();
        t.set("prefix", prefix);
        Route(t)
    }

    /// A route matching exactly the path `path`.
    pub fn exact(path: &str) -> Route {
        let mut t = Table::default();
        t.set("exact", path);
        Route(t)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Route {
        self.0.set(key, value);
        self
    }

    /// Only for requests to `host` (`host = "..."`).
    pub fn host(self, host: &str) -> Route {
        self.with("host", host)
    }

    /// Proxied to upstream `name` (`upstream = "..."`).
    pub fn upstream(self, name: &str) -> Route {
        self.with("upstream", name)
    }

    /// Answered by the hub in-process (`kind = "hub"`).
    pub fn hub(self) -> Route {
        self.with("kind", "hub")
    }

    /// The edge's own sign-in endpoints: login page, logout, `/auth/me`
    /// (`kind = "auth"`).
    pub fn sign_in(self) -> Route {
        self.with("kind", "auth")
    }

    /// Where a hub route sends what it does not answer (`fallback = "..."`).
    pub fn fallback(self, name: &str) -> Route {
        self.with("fallback", name)
    }

    /// A long-lived stream: SSE or websocket (`stream = true`).
    pub fn stream(self) -> Route {
        self.with("stream", true)
    }

    /// Gated: only with a session (`auth = "session"`).
    pub fn session(self) -> Route {
        self.with("auth", "session")
    }

    /// A bearer token instead of a session, checked by the route's handler
    /// (`auth = "token"`).
    pub fn token(self) -> Route {
        self.with("auth", "token")
    }

    /// `read_timeout`, a duration such as `"1s"`.
    pub fn read_timeout(self, timeout: &str) -> Route {
        self.with("read_timeout", timeout)
    }

    /// Files from the directory `root` (`kind = "static"`).
    pub fn files(self, root: &std::path::Path) -> Route {
        self.with("kind", "static")
            .with("root", root.display().to_string())
    }

    /// Any other key of the route.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Route {
        self.with(key, value)
    }

    /// The route's `csp`.
    pub fn csp(self, csp: &str) -> Route {
        self.with("csp", csp)
    }

    /// `max_body_bytes` for this route.
    pub fn max_body_bytes(self, bytes: i64) -> Route {
        self.with("max_body_bytes", bytes)
    }
}

/// A whole edge config, rendered to TOML by [`render`](Self::render) or
/// [`to_toml`](Self::to_toml).
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    server: Table,
    tls: Option<Table>,
    hub: Table,
    auth: Table,
    upstreams: Vec<(String, String)>,
    routes: Vec<Route>,
    raw: String,
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A `[server]` setting (besides the generated ones `render` adds):
    /// `.server("grace_period", "5s")`, `.server("redirect_https", true)`.
    pub fn server(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        self.server.set(key, value);
        self
    }

    /// A `[tls]` listener on `listen` with the PEM files `cert` and `key`.
    pub fn tls(mut self, listen: &str, cert: &str, key: &str) -> ConfigBuilder {
        let mut t = Table::default();
        t.set("listen", listen);
        t.set("cert", cert);
        t.set("key", key);
        self.tls = Some(t);
        self
    }

    /// A `[hub]` setting: `.hub("events_token", TOKEN)`, `.hub("replay_recent", 0)`.
    pub fn hub(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        self.hub.set(key, value);
        self
    }

    /// An `[auth]` setting: `.auth("idle_timeout", "3s")`.
    pub fn auth(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        self.auth.set(key, value);
        self
    }

    /// `[upstreams.<name>]` at `address` (`host:port`).
    pub fn upstream(mut self, name: &str, address: impl Into<String>) -> ConfigBuilder {
        self.upstreams.push((name.to_string(), address.into()));
        self
    }

    /// One more `[[routes]]` entry, after those added before (order matters
    /// to the edge only where two routes match the same request).
    pub fn route(mut self, route: Route) -> ConfigBuilder {
        self.routes.push(route);
        self
    }

    /// TOML text written as it is, after everything else: for config whose
    /// literal text is the point. It should start with a table header, or its
    /// keys land in the last table written before it.
    pub fn raw(mut self, text: &str) -> ConfigBuilder {
        self.raw.push_str(text);
        self
    }

    /// The config as the test edge reads it: the generated `[server]`
    /// settings for `port`, with sockets and data in `dir`, then the
    /// `[server]` settings set here, then the rest.
    pub fn render(&self, dir: &Path, port: u16) -> String {
        let mut out = server_section(dir, port);
        for (key, value) in &self.server.0 {
            writeln!(out, "{key} = {value}").expect("write");
        }
        self.write_tables(&mut out);
        out
    }

    /// The config exactly as set, with no generated settings (a `[server]`
    /// table only if some were set).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if !self.server.0.is_empty() {
            self.server.write("[server]", &mut out);
        }
        self.write_tables(&mut out);
        out
    }

    fn write_tables(&self, out: &mut String) {
        if let Some(tls) = &self.tls {
            tls.write("[tls]", out);
        }
        if !self.hub.0.is_empty() {
            self.hub.write("[hub]", out);
        }
        if !self.auth.0.is_empty() {
            self.auth.write("[auth]", out);
        }
        for (name, address) in &self.upstreams {
            let mut t = Table::default();
            t.set("address", address.as_str());
            t.write(&format!("[upstreams.{name}]"), out);
        }
        for route in &self.routes {
            route.0.write("[[routes]]", out);
        }
        out.push_str(&self.raw);
    }
}

/// Server settings every test config gets, keeping sockets inside the temp dir.
fn server_section(dir: &Path, port: u16) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 2\nupgrade_sock = \"{d}/upgrade.sock\"\npid_file = \"{d}/edge.pid\"\ndata_dir = \"{d}\"\n",
        d = dir.display()
    )
}
