//! The `esprit-edge` command: run the server, check a config, manage users.

use clap::{Parser, Subcommand};
use esprit_edge::auth::service::open_stores;
use esprit_edge::auth::users::{self, User, Users};
use esprit_edge::redis_link::RedisLink;
use esprit_edge::{config, server, telemetry};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Esprit-Hub edge proxy and agent hub.
#[derive(Parser, Debug)]
#[command(name = "esprit-edge", version, about)]
struct Cli {
    /// Config file (default: $ESPRIT_CONFIG, else conf/esprit-edge.toml).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running instance (after it gets SIGQUIT).
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config (and the certificates it names), then exit.
    Check,
    /// Manage the users in <data_dir>/users.toml.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// List or end sign-in sessions (takes effect on a running edge within seconds).
    Session {
        #[command(subcommand)]
        action: SessionAction,
    },
    /// The identity assertions' signing keys (<data_dir>/signing-keys.json).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Copy this edge's SQLite sessions, devices and hub events into the
    /// Redis that [storage] names (run it with the SQLite edge stopped).
    Migrate {
        /// The target backend (only `redis`).
        #[arg(long, value_parser = ["redis"])]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyAction {
    /// Add a new key: published at once, signing 90 s later (when upstreams
    /// caching the JWKS know it); the old one stays published until its last
    /// assertion expired. A running edge follows within a second.
    Rotate {
        /// Sign with the new key at once (a compromised key): upstreams that
        /// cached the JWKS refuse new assertions until they refetch it.
        #[arg(long)]
        immediately: bool,
    },
    /// List the keys: id, created, retired, published.
    List,
}

fn key_command(cfg: &config::Config, action: KeyAction) -> ExitCode {
    use esprit_edge::auth::keys;
    let (file, ttl) = (&cfg.auth.keys_file, cfg.auth.assertion_ttl);
    let now = esprit_edge::clock::now_ms();
    match action {
        KeyAction::Rotate { immediately } => match keys::rotate(file, now, ttl, immediately) {
            Ok(kid) => {
                if immediately {
                    println!("new signing key {kid} in {}, signing now", file.display());
                } else {
                    println!(
                        "new signing key {kid} in {}, published now, signing in {} s",
                        file.display(),
                        keys::PUBLISH_AHEAD_MS / 1000
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        KeyAction::List => match keys::KeyRing::load(file) {
            Ok(ring) => {
                println!(
                    "{:<24} {:<21} {:<21} published",
                    "kid", "created", "retired"
                );
                for (k, published) in ring.list(now, ttl) {
                    let retired = k.retired.map_or_else(|| "-".to_string(), iso);
                    println!(
                        "{:<24} {:<21} {:<21} {}",
                        k.kid,
                        iso(k.created),
                        retired,
                        if k.retired.is_none() {
                            "yes (signing)"
                        } else if published {
                            "yes"
                        } else {
                            "no (dropped at the next rotate)"
                        }
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

#[derive(Subcommand, Debug)]
enum SessionAction {
    /// List live sessions: id prefix, user, created, last seen.
    List,
    /// End one session (by the id prefix `list` shows) or all of a user's.
    Revoke {
        /// Id prefix from `session list`.
        id: Option<String>,
        /// End every session of this user.
        #[arg(long, conflicts_with = "id")]
        user: Option<String>,
    },
}

/// The shared Redis when the config names one.
fn redis_link(cfg: &config::Config) -> Result<Option<Arc<RedisLink>>, String> {
    match &cfg.storage {
        config::Storage::Sqlite => Ok(None),
        config::Storage::Redis(r) => RedisLink::new(r).map(Some).map_err(|e| e.to_string()),
    }
}

fn session_command(cfg: &config::Config, action: SessionAction) -> ExitCode {
    let link = match redis_link(cfg) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let sessions = match open_stores(cfg, link.as_ref()) {
        Ok((s, _)) => s,
        Err(e) => return fail(e),
    };
    let now = esprit_edge::clock::now_ms();
    match action {
        SessionAction::List => match sessions.list(now) {
            Ok(list) => {
                for (id, r) in list {
                    println!(
                        "{id}\t{}\tcreated {}\tlast seen {}",
                        r.user,
                        iso(r.created),
                        iso(r.last_seen)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        SessionAction::Revoke { id, user } => {
            let ended = match (id, user) {
                (Some(id), None) => sessions.revoke_prefix(&id),
                (None, Some(user)) => sessions.revoke_user(&user),
                _ => return fail("give a session id prefix or --user NAME"),
            };
            match ended {
                Ok(0) => fail("no such session"),
                Ok(n) => {
                    println!("ended {n} session(s)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn iso(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Add a user, or replace one's password and details.
    Add {
        /// Login name: 1-64 of A-Z a-z 0-9 . _ @ -
        name: String,
        /// Read the password from standard input (the only way: never from arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Name shown in the UI.
        #[arg(long)]
        display_name: Option<String>,
        /// Email passed upstream as X-Forwarded-Email.
        #[arg(long)]
        email: Option<String>,
    },
    /// Remove a user.
    Remove {
        /// Login name.
        name: String,
    },
    /// List the users.
    List,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("esprit-edge: {msg}");
    ExitCode::from(2)
}

/// Ends every session of `name` (and forgets its devices): a replaced
/// password or a removed user must not leave a signed-in browser behind.
fn end_sessions_of(cfg: &config::Config, name: &str) -> Result<usize, String> {
    let link = redis_link(cfg)?;
    let (sessions, devices) = open_stores(cfg, link.as_ref()).map_err(|e| e.to_string())?;
    let ended = sessions.revoke_user(name).map_err(|e| e.to_string())?;
    devices.forget_user(name).map_err(|e| e.to_string())?;
    Ok(ended)
}

fn user_command(cfg: &config::Config, action: UserAction) -> ExitCode {
    let users_file = cfg.auth.users_file.as_path();
    let mut all = match Users::load(users_file) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    match action {
        UserAction::Add {
            name,
            password_stdin: _,
            display_name,
            email,
        } => {
            if users::UserName::parse(&name).is_none() {
                return fail(format!(
                    "{name:?} is not a login name (1-64 of A-Z a-z 0-9 . _ @ -)"
                ));
            }
            let mut input = String::new();
            if let Err(e) = std::io::stdin()
                .take(users::MAX_PASSWORD as u64 + 2)
                .read_to_string(&mut input)
            {
                return fail(format!("cannot read the password from standard input: {e}"));
            }
            let password = input
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&input);
            if let Err(e) = users::check_password(password) {
                return fail(e);
            }
            let hash = match users::hash_password(password) {
                Ok(h) => h,
                Err(e) => return fail(e),
            };
            let replaced = all
                .users
                .insert(
                    name.clone(),
                    User {
                        hash,
                        display_name,
                        email,
                    },
                )
                .is_some();
            if let Err(e) = all.save(users_file) {
                return fail(e);
            }
            println!(
                "{} user {name} in {}",
                if replaced { "replaced" } else { "added" },
                users_file.display()
            );
            // A new password ends the sessions signed in with the old one; a
            // name added again (after it was removed by editing the file) must
            // not bring its old sessions back.
            match end_sessions_of(cfg, &name) {
                Ok(0) => {}
                Ok(n) => println!("ended {n} session(s) of {name}"),
                Err(e) => {
                    return fail(format!(
                        "user saved, but {name}'s earlier sessions could not be ended: {e}"
                    ));
                }
            }
        }
        UserAction::Remove { name } => {
            if all.users.remove(&name).is_none() {
                return fail(format!(
                    "no user named {name:?} in {}",
                    users_file.display()
                ));
            }
            if let Err(e) = all.save(users_file) {
                return fail(e);
            }
            println!("removed user {name} from {}", users_file.display());
            match end_sessions_of(cfg, &name) {
                Ok(n) => println!("ended {n} session(s) of {name}"),
                Err(e) => {
                    return fail(format!(
                        "user removed, but their sessions could not be ended: {e}"
                    ));
                }
            }
        }
        UserAction::List => {
            for (name, u) in &all.users {
                let extra: Vec<String> = [u.display_name.clone(), u.email.clone()]
                    .into_iter()
                    .flatten()
                    .collect();
                if extra.is_empty() {
                    println!("{name}");
                } else {
                    println!("{name}\t{}", extra.join("\t"));
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config::choose_path(cli.config.as_deref());
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("esprit-edge: invalid config\n{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::User { action }) => return user_command(&cfg, action),
        Some(Command::Session { action }) => return session_command(&cfg, action),
        Some(Command::Key { action }) => return key_command(&cfg, action),
        Some(Command::Migrate { to: _ }) => {
            return match esprit_edge::migrate::to_redis(&cfg, esprit_edge::clock::now_ms()) {
                Ok(c) => {
                    println!(
                        "copied {} session(s), {} device(s), {} hub event(s)",
                        c.sessions, c.devices, c.events
                    );
                    if let Some(why) = c.events_skipped {
                        println!("hub events not copied: {why}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        _ => {}
    }
    if let Err(e) = server::preflight(&cfg) {
        eprintln!("esprit-edge: invalid config\n{e:#}");
        return ExitCode::from(2);
    }
    let advice = server::advice(&cfg);
    match cli.command {
        Some(Command::Check) => {
            for a in &advice {
                eprintln!("esprit-edge: warning: {a}");
            }
            println!(
                "{}: ok ({} routes, {} upstreams{})",
                path.display(),
                cfg.routes.len(),
                cfg.upstreams.len(),
                if cfg.tls.is_some() { ", tls" } else { "" }
            );
            ExitCode::SUCCESS
        }
        Some(
            Command::User { .. }
            | Command::Session { .. }
            | Command::Key { .. }
            | Command::Migrate { .. },
        ) => ExitCode::SUCCESS,
        None => {
            let _log = telemetry::init();
            for a in &advice {
                tracing::warn!(target: "edge", "{a}");
            }
            match server::run(cfg, cli.upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("esprit-edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
