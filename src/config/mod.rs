//! Configuration: the TOML file, environment overrides and validation into a
//! typed model. Parsed once at start-up; the proxy only reads the result.

pub mod defaults;
mod env;
mod error;
mod file;
mod model;
mod validate;

pub use env::upstream_var;
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    Auth, Config, HandlerKind, Hub, Limit, LimitKey, PathMatch, RedisStorage, Route, RouteAction,
    RouteAuth, Server, Storage, Timeouts, Tls, Upstream, redact_url,
};

use std::path::{Path, PathBuf};

/// The config used when neither `--config` nor `ESPRIT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "conf/esprit-edge.toml";

/// Which file to read: `--config`, else `ESPRIT_CONFIG`, else the default.
pub fn choose_path(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ESPRIT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads, overrides from the process environment, and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, std::env::vars())
}

/// As [`load`], with the environment given, so tests need not touch the process's.
pub fn load_with_env<I>(path: &Path, vars: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            problem: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(path, &text, vars)
}

/// Parses config text that came from `path`.
pub fn parse<I>(path: &Path, text: &str, vars: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut raw: file::FileConfig = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            problem: toml_problem(text, &e),
        }])
    })?;
    let mut problems = error::Problems::new(path);
    let overrides = env::apply(&mut raw, vars, &mut problems);
    let config = validate::validate(path, raw, &overrides, &mut problems);
    problems.finish(config)
}

/// `line N: message`, on one line, from a TOML error.
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
        parse(Path::new("test.toml"), text, Vec::new())
    }

    const MINIMAL: &str = r#"
        [upstreams.app]
        address = "127.0.0.1:9000"
        [[routes]]
        prefix = "/"
        upstream = "app"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.routes[0].timeouts.read.as_secs(), 60);
        assert_eq!(c.upstreams["app"].port, 9000);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse_str("[server]\nlisten = \"0.0.0.0:1\"\nlistne = 1\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("test.toml: line 3: unknown field `listne`"),
            "{s}"
        );
    }

    #[test]
    fn undefined_upstream_is_named() {
        let e =
            parse_str(&MINIMAL.replace("upstream = \"app\"", "upstream = \"simm\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml: routes[0].upstream: no upstream named \"simm\" (defined: app)"
        );
    }

    #[test]
    fn duplicate_prefix_is_rejected() {
        let text = format!("{MINIMAL}\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n");
        let e = parse_str(&text).unwrap_err();
        assert!(
            e.to_string()
                .contains("routes[1]: matches the same host and path as routes[0]")
        );
    }

    #[test]
    fn bad_address_and_listen() {
        let text = MINIMAL.replace("127.0.0.1:9000", "nope") + "[server]\nlisten = \"localhost\"\n";
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("upstreams.app.address: \"nope\" is not host:port"),
            "{e}"
        );
        assert!(
            e.contains("server.listen: \"localhost\" is not an IP:port"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_apply_and_are_named_in_errors() {
        let vars = vec![
            ("ESPRIT_LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("ESPRIT_UPSTREAM_APP".to_string(), "10.1.2.3:80".to_string()),
            ("ESPRIT_DATA_DIR".to_string(), "/var/lib/edge".to_string()),
            (
                "ESPRIT_PUBLIC_ORIGIN".to_string(),
                "https://hub.example.com".to_string(),
            ),
        ];
        let c = parse(Path::new("t.toml"), MINIMAL, vars).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.upstreams["app"].host, "10.1.2.3");
        assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/edge"));
        assert_eq!(
            c.server.public_origin.as_deref(),
            Some("https://hub.example.com")
        );

        let bad = vec![("ESPRIT_LISTEN".to_string(), "x".to_string())];
        let e = parse(Path::new("t.toml"), MINIMAL, bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.listen (from ESPRIT_LISTEN): \"x\""),
            "{e}"
        );

        let unknown = vec![("ESPRIT_UPSTREAM_NOPE".to_string(), "a:1".to_string())];
        let e = parse(Path::new("t.toml"), MINIMAL, unknown)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ESPRIT_UPSTREAM_NOPE: no upstream named \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn route_kind_rules() {
        let text = r#"
            [upstreams.app]
            address = "a:1"
            [[routes]]
            exact = "/x"
            to = "/y"
            upstream = "app"
            [[routes]]
            prefix = "/z"
            kind = "teleport"
            [[routes]]
            prefix = "/r"
            to = "//evil"
        "#;
        let e = parse_str(text).unwrap_err().to_string();
        assert!(
            e.contains("routes[0].upstream: does not apply to kind = \"redirect\""),
            "{e}"
        );
        assert!(
            e.contains("routes[1].kind: unknown kind \"teleport\""),
            "{e}"
        );
        assert!(e.contains("routes[2].to: \"//evil\" must be a path"), "{e}");
    }

    #[test]
    fn the_route_says_how_it_is_authenticated() {
        let base = "[upstreams.app]\naddress = \"a:1\"\n";
        let ok = parse_str(&format!(
            "{base}[[routes]]\nexact = \"/api/events\"\nkind = \"hub\"\nauth = \"token\"\n"
        ))
        .unwrap();
        assert_eq!(ok.routes[0].auth, RouteAuth::Token);
        let e = parse_str(&format!(
            "{base}[[routes]]\nprefix = \"/a/\"\nupstream = \"app\"\nauth = \"token\"\n\
             [[routes]]\nprefix = \"/auth/\"\nkind = \"auth\"\nauth = \"token\"\n\
             [[routes]]\nprefix = \"/b/\"\nupstream = \"app\"\nauth = \"password\"\n\
             [[routes]]\nprefix = \"/api/\"\nkind = \"hub\"\nfallback = \"app\"\nauth = \"token\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("routes[0].auth: \"token\" needs a route whose handler checks tokens (kind = \"hub\"), not kind = \"proxy\""),
            "{e}"
        );
        assert!(e.contains("routes[1].auth: \"token\" needs"), "{e}");
        assert!(
            e.contains("routes[2].auth: \"password\" is not \"session\", \"token\" or \"none\""),
            "{e}"
        );
        assert!(
            e.contains("routes[3].fallback: cannot go with auth = \"token\""),
            "{e}"
        );
    }

    #[test]
    fn keys_of_other_kinds_are_refused_by_the_table() {
        let e = parse_str(
            "[upstreams.app]\naddress = \"a:1\"\n[[routes]]\nprefix = \"/auth/\"\nkind = \"auth\"\nstream = true\nfallback = \"app\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("routes[0].stream: does not apply to kind = \"auth\""),
            "{e}"
        );
        assert!(
            e.contains("routes[0].fallback: does not apply to kind = \"auth\""),
            "{e}"
        );
    }

    #[test]
    fn missing_cert_is_named() {
        let text = format!(
            "{MINIMAL}\n[tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n"
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("tls.cert: cannot read /nonexistent/c.pem"),
            "{e}"
        );
        assert!(e.contains("tls.key: cannot read /nonexistent/k.pem"), "{e}");
    }

    #[test]
    fn numeric_ranges_are_checked() {
        let text = format!(
            "[server]\nread_buffer = 10\nkeepalive_timeout = \"100ms\"\n[hub]\nsubscriber_queue = 0\nevents_token = \"short\"\n{MINIMAL}"
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("server.read_buffer: 10 is out of range"), "{e}");
        assert!(
            e.contains("server.keepalive_timeout: must be at least 1s"),
            "{e}"
        );
        assert!(e.contains("hub.subscriber_queue: out of range"), "{e}");
        assert!(e.contains("hub.events_token: must be at least 16"), "{e}");
    }

    #[test]
    fn token_settings_are_checked() {
        let jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        let text = format!(
            "[hub]\nevents_token = \"{jwt_like}\"\nrun_token_ttl = \"10s\"\n[auth]\nassertion_ttl = \"2h\"\n{MINIMAL}"
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("hub.events_token: looks like a JWT"), "{e}");
        assert!(
            e.contains("hub.run_token_ttl: out of range (1m to 7d)"),
            "{e}"
        );
        assert!(
            e.contains("auth.assertion_ttl: out of range (10s to 1h)"),
            "{e}"
        );
    }

    #[test]
    fn stream_routes_outlive_socketio_ping() {
        let text = MINIMAL.replace("upstream = \"app\"", "upstream = \"app\"\nstream = true");
        let c = parse_str(&text).unwrap();
        // socket.io pings every 25 s and waits 20 s for the pong.
        assert!(c.routes[0].timeouts.read.as_secs() >= 60);
        assert!(c.routes[0].stream);
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
        let c = load_with_env(&path, Vec::new()).unwrap();
        for name in ["skyoffice", "sim", "realtime"] {
            assert!(c.upstreams.contains_key(name), "{name}");
        }
    }
}
