//! Environment overrides, so one config file serves docker compose and a laptop.
//! They are applied to the raw file before validation, and every overridden key
//! remembers the variable that set it so errors can name it.

use super::error::Problems;
use super::file::FileConfig;
use std::collections::HashMap;
use std::path::PathBuf;

/// Prefix of the per-upstream address override: `ESPRIT_UPSTREAM_SIM=10.0.0.5:3000`.
pub const UPSTREAM_PREFIX: &str = "ESPRIT_UPSTREAM_";

/// Which config keys came from which variable.
#[derive(Debug, Default)]
pub struct Overrides(HashMap<String, String>);

impl Overrides {
    /// The key as errors show it: `server.listen (from ESPRIT_LISTEN)`.
    pub fn label(&self, key: &str) -> String {
        match self.0.get(key) {
            Some(var) => format!("{key} (from {var})"),
            None => key.to_string(),
        }
    }
}

/// The env var name that overrides upstream `name`.
pub fn upstream_var(name: &str) -> String {
    format!(
        "{UPSTREAM_PREFIX}{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Applies the `ESPRIT_*` variables from `vars` to `file`.
pub(crate) fn apply<I>(file: &mut FileConfig, vars: I, problems: &mut Problems) -> Overrides
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut set = HashMap::new();
    for (var, value) in vars {
        match var.as_str() {
            "ESPRIT_LISTEN" => {
                file.server.listen = Some(value);
                set.insert("server.listen".to_string(), var);
            }
            "ESPRIT_DATA_DIR" => {
                file.server.data_dir = Some(PathBuf::from(value));
                set.insert("server.data_dir".to_string(), var);
            }
            "ESPRIT_EVENTS_TOKEN" => {
                file.hub.events_token = Some(value);
                set.insert("hub.events_token".to_string(), var);
            }
            "ESPRIT_DEMO" => {
                match value.to_ascii_lowercase().as_str() {
                    "on" | "true" | "1" => file.hub.demo = Some(true),
                    "off" | "false" | "0" => file.hub.demo = Some(false),
                    _ => problems.add(
                        "hub.demo (from ESPRIT_DEMO)",
                        format!("{value:?} is not on or off"),
                    ),
                }
                set.insert("hub.demo".to_string(), var);
            }
            "ESPRIT_ADMIN_LISTEN" => {
                file.admin.listen = Some(value);
                set.insert("admin.listen".to_string(), var);
            }
            "ESPRIT_REDIS_URL" => {
                file.storage.url = Some(value);
                set.insert("storage.url".to_string(), var);
            }
            "ESPRIT_PUBLIC_ORIGIN" => {
                file.server.public_origin = Some(value);
                set.insert("server.public_origin".to_string(), var);
            }
            _ => {
                let Some(suffix) = var.strip_prefix(UPSTREAM_PREFIX) else {
                    continue;
                };
                let found = file
                    .upstreams
                    .keys()
                    .find(|name| upstream_var(name) == var)
                    .cloned();
                match found {
                    Some(name) => {
                        if let Some(u) = file.upstreams.get_mut(&name) {
                            u.address = value;
                        }
                        set.insert(format!("upstreams.{name}.address"), var);
                    }
                    None => {
                        let known: Vec<_> =
                            file.upstreams.keys().map(|n| upstream_var(n)).collect();
                        problems.add(
                            var.clone(),
                            format!(
                                "no upstream named {:?} in the config (known: {})",
                                suffix.to_ascii_lowercase(),
                                if known.is_empty() {
                                    "none".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
        }
    }
    Overrides(set)
}
